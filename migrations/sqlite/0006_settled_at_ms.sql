-- When a claim's settlement was recorded, in milliseconds: the overdraw guard asks whether a
-- payer's payment settled after another payment of its was checked on-chain, and payments of a
-- sequential client are milliseconds apart (seconds would make every one of them ask again).
ALTER TABLE payment_claims ADD COLUMN settled_at_ms BIGINT;
