-- The overdraw guard asks, on every paid request, for a payer's open claims and whether one of
-- its payments settled since a moment: without an index past (network, asset, payer) both walked
-- every claim the payer ever made, so a payment's cost grew with its payer's history (found by a
-- 300 s soak: paid latency and memory rising with payments settled). Covering, so neither half
-- reads the table.
CREATE INDEX payment_claims_payer_state
    ON payment_claims (network, asset, payer, status, settled_at_ms, amount);
-- The reconciler's passes (settling claims; claimed claims past their authorization) read claims
-- by status; without this every pass scanned the whole table.
CREATE INDEX payment_claims_status ON payment_claims (status, updated_at);
