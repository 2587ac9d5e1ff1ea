-- Payments: consume-once claims, the settlement ledger, and the deferred settlement queue.
-- Times are Unix seconds (BIGINT) and amounts decimal strings of atomic units (TEXT): both
-- backends store them exactly, and no amount ever passes through a float.

-- One row per payment proof the gateway has accepted for service. The UNIQUE key is the
-- consume-once guarantee: a claim is a single INSERT ... ON CONFLICT on it, never check-then-mark.
CREATE TABLE payment_claims (
    id           BIGSERIAL PRIMARY KEY,
    network      TEXT    NOT NULL,             -- CAIP-2 id
    asset        TEXT    NOT NULL,             -- lower-case token address
    payer        TEXT    NOT NULL,             -- lower-case authorization.from
    nonce        TEXT    NOT NULL,             -- EIP-3009 nonce, 0x hex
    -- claimed: serving; settling: tx sent, outcome unknown; settled: on-chain and in `settlements`;
    -- queued: deferred settlement pending; released: not charged (origin failed, RPC down) and
    -- claimable again; failed: settlement refused or reverted.
    status       TEXT    NOT NULL,
    tenant       TEXT    NOT NULL,
    route        TEXT    NOT NULL,             -- the route's path pattern, for revenue by route
    amount       TEXT    NOT NULL,
    valid_before BIGINT  NOT NULL,             -- after this the authorization cannot settle
    tx_hash      TEXT,                         -- set once a settlement tx is signed
    error        TEXT,                         -- why it failed or was released
    claimed_at   BIGINT  NOT NULL,
    updated_at   BIGINT  NOT NULL,
    UNIQUE (network, asset, payer, nonce)
);

-- The ledger: one row per settlement that landed on-chain. claim_id is UNIQUE so a settlement is
-- recorded at most once however often a worker retries.
CREATE TABLE settlements (
    id           BIGSERIAL PRIMARY KEY,
    claim_id     BIGINT  NOT NULL UNIQUE REFERENCES payment_claims (id),
    network      TEXT    NOT NULL,
    asset        TEXT    NOT NULL,
    payer        TEXT    NOT NULL,
    pay_to       TEXT    NOT NULL,
    amount       TEXT    NOT NULL,
    tx_hash      TEXT    NOT NULL,
    block_number BIGINT  NOT NULL,
    tenant       TEXT    NOT NULL,
    route        TEXT    NOT NULL,
    settled_at   BIGINT  NOT NULL
);
CREATE INDEX settlements_tenant_time ON settlements (tenant, settled_at);

-- Deferred settlements: written before the response goes out, so they survive a restart.
CREATE TABLE settlement_queue (
    claim_id        BIGINT  PRIMARY KEY REFERENCES payment_claims (id),
    verified        TEXT    NOT NULL,          -- JSON of the verified authorization
    status          TEXT    NOT NULL,          -- queued | done | failed
    attempts        INTEGER NOT NULL,
    next_attempt_at BIGINT  NOT NULL,
    prepared        TEXT,                      -- JSON of the signed tx, re-sent as is after a crash
    last_error      TEXT,
    created_at      BIGINT  NOT NULL,
    updated_at      BIGINT  NOT NULL
);
CREATE INDEX settlement_queue_due ON settlement_queue (status, next_attempt_at);
