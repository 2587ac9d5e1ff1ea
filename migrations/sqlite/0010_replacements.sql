-- The settlement transactions a claim's current one (tx_hash) replaced: same settler nonce, same
-- calls, lower fees, any of which may be the one mined. Space-separated hashes, oldest first;
-- NULL for a settlement never replaced.
ALTER TABLE payment_claims ADD COLUMN tx_replaced TEXT;
