-- Leases, so that instances sharing one database never act on the same thing at once.

-- A settler key signs with one nonce sequence: two instances signing with it at once collide on
-- nonces. Each instance leases the keys it signs with; a lease it stops renewing (a crash) lapses
-- at expires_at and another instance may take the key.
CREATE TABLE settler_leases (
    network    TEXT   NOT NULL,            -- CAIP-2 id
    settler    TEXT   NOT NULL,            -- lower-case address of the key
    holder     TEXT   NOT NULL,            -- the instance holding it
    expires_at BIGINT NOT NULL,            -- Unix seconds
    PRIMARY KEY (network, settler)
);

-- A deferred settlement is taken by one worker at a time: `holder` works on it until
-- `lease_until`, after which (a crash) another worker may take it.
ALTER TABLE settlement_queue ADD COLUMN holder TEXT;
ALTER TABLE settlement_queue ADD COLUMN lease_until BIGINT;
