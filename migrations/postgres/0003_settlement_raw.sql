-- The signed settlement transaction of a claim, kept beside its hash.
-- tx_raw: 0x hex of the EIP-2718 bytes, written with tx_hash before the transaction is sent. A
-- node may drop a sent transaction from its pool; the reconciler then sends these very bytes again
-- (same hash, same settler nonce), so a settlement lands or expires and a payment is never
-- settled by a second transaction. NULL for claims settled by earlier versions.
ALTER TABLE payment_claims ADD COLUMN tx_raw TEXT;
