-- Tenants, their API keys, monthly usage, and transactions consumed through the verify API.

-- An API provider on this gateway. Tenants declared in the TOML are upserted at start (source
-- 'config'); the management API creates more (source 'api').
CREATE TABLE tenants (
    id         TEXT   PRIMARY KEY,
    name       TEXT   NOT NULL,
    email      TEXT,
    tier       TEXT   NOT NULL,      -- a tier name from the config (built in or custom)
    status     TEXT   NOT NULL,      -- active | suspended: a suspended tenant's routes answer 403
    pay_to     TEXT   NOT NULL,      -- JSON object: CAIP-2 network -> payout address
    source     TEXT   NOT NULL,      -- config | api
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- API keys are shown once and stored only as a SHA-256 hash. `prefix` (the first characters of
-- the key's random part) finds the row without scanning; alone it cannot authenticate.
CREATE TABLE api_keys (
    id           TEXT   PRIMARY KEY,
    tenant_id    TEXT   NOT NULL REFERENCES tenants (id),
    prefix       TEXT   NOT NULL UNIQUE,
    hash         TEXT   NOT NULL,    -- hex SHA-256 of the whole key
    scopes       TEXT   NOT NULL,    -- space-separated: verify usage:read keys:write payments:read
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT,             -- NULL: never; rotation sets it to the end of the grace period
    revoked_at   BIGINT,
    last_used_at BIGINT,
    replaced_by  TEXT                -- the key that rotated this one
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id);

-- Verified payments per tenant per UTC month ('2026-11'). Incremented by one conditional upsert
-- that refuses to pass the tier's limit, so concurrent requests (and instances) never over-admit.
CREATE TABLE usage_counters (
    tenant_id TEXT   NOT NULL,
    period    TEXT   NOT NULL,
    verified  BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, period)
);

-- On-chain transactions a tenant has had verified through the API: each counts once.
CREATE TABLE verified_transactions (
    tenant_id   TEXT   NOT NULL,
    network     TEXT   NOT NULL,
    tx_hash     TEXT   NOT NULL,     -- lower-case 0x hex
    payer       TEXT   NOT NULL,
    amount      TEXT   NOT NULL,
    verified_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, network, tx_hash)
);

-- The month a claim was counted in, so releasing it (not charged) uncounts the right month.
ALTER TABLE payment_claims ADD COLUMN period TEXT;
CREATE INDEX payment_claims_tenant ON payment_claims (tenant, claimed_at);
