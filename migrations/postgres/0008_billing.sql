-- Plan billing: Stripe webhook events applied once each, and where each billed tenant's plan
-- stands (which source bills it, the newest event applied, until when it is paid).

-- Every Stripe event applied (or deliberately skipped as stale), by its id: Stripe delivers at
-- least once and retries, so a second delivery of an id is answered 200 and changes nothing.
-- Events that were ignored (unknown price, unknown tenant, an event type we do not use) are not
-- recorded, so the operator can resend them from Stripe's dashboard once the config knows them.
CREATE TABLE billing_events (
    event_id    TEXT   PRIMARY KEY,     -- evt_...
    event_type  TEXT   NOT NULL,
    tenant_id   TEXT   NOT NULL,
    created     BIGINT NOT NULL,        -- the event's own `created` (Unix seconds, Stripe's clock)
    outcome     TEXT   NOT NULL,        -- applied | stale (older than the tenant's newest event)
    received_at BIGINT NOT NULL
);

-- One row per tenant whose plan is billed (by Stripe or by x402). A tenant with a row here keeps
-- its tier across restarts even when [[tenants]] in the file names another: billing is the
-- authority on a billed tenant's tier.
CREATE TABLE tenant_billing (
    tenant_id       TEXT   PRIMARY KEY,
    source          TEXT   NOT NULL,    -- stripe | x402: what last set the tier
    -- active | past_due (a renewal failed; the tier is kept while Stripe retries) | canceled
    -- (back to free)
    status          TEXT   NOT NULL,
    -- The newest applied Stripe event's `created`: an event older than this is recorded as
    -- stale and changes nothing, since Stripe does not deliver in order.
    last_event_at   BIGINT NOT NULL,
    customer        TEXT,               -- Stripe customer id (cus_...)
    subscription    TEXT,               -- Stripe subscription id (sub_...), to find the tenant
                                        -- of an invoice that does not carry its metadata
    paid_until      BIGINT,             -- x402 plans: the end of the paid period (Unix seconds)
    updated_at      BIGINT NOT NULL
);
CREATE INDEX tenant_billing_subscription ON tenant_billing (subscription);
