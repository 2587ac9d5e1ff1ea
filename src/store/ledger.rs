//! The settlement ledger: one row per settlement that landed, written with its claim's move to
//! `settled` in one transaction; and the claims whose outcome was never recorded, for the
//! reconciler.

use super::*;

impl Store {
    /// Records a landed settlement in the ledger and marks its claim settled, atomically.
    /// Recording the same claim twice is a no-op. The commit is relaxed (`durability.rs`): the
    /// claim's synced settlement record names the transaction, and the reconciler writes the row
    /// again from it should a power cut take this one.
    pub async fn record_settlement(
        &self,
        claim_id: i64,
        v: &Verified,
        s: &Settlement,
        ctx: &ClaimContext<'_>,
    ) -> Result<(), StoreError> {
        self.write_ledger(
            LedgerRow::of_verified(claim_id, v, s, ctx),
            Durability::Relaxed,
        )
        .await
    }

    /// `record_settlement` for the landed payments of one batch transaction, in one database
    /// transaction (one commit for the lot).
    pub async fn record_settlements(
        &self,
        landed: &[(i64, &Verified, &Settlement, ClaimContext<'_>)],
    ) -> Result<(), StoreError> {
        if landed.is_empty() {
            return Ok(());
        }
        if let (Backend::Sqlite, Some(queue)) = (self.backend, &self.writer) {
            let rows = landed
                .iter()
                .map(|(claim_id, v, s, ctx)| {
                    LedgerBinds::of(&LedgerRow::of_verified(*claim_id, v, s, ctx))
                })
                .collect();
            // The writing thread gone (it panicked): written here instead.
            if let Ok(done) = queue.ledger(rows, Durability::Relaxed).await {
                return done;
            }
        }
        let rows: Vec<_> = landed
            .iter()
            .map(|(claim_id, v, s, ctx)| {
                LedgerBinds::of(&LedgerRow::of_verified(*claim_id, v, s, ctx))
            })
            .collect();
        let rows: Vec<&LedgerBinds> = rows.iter().collect();
        let mut tx = self.begin_with(Durability::Relaxed).await?;
        write_rows_in(&mut tx, &rows).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The one ledger write: the settlement row (at most one per claim) and the claim marked
    /// settled, in one transaction.
    pub(super) async fn write_ledger(
        &self,
        row: LedgerRow<'_>,
        durability: Durability,
    ) -> Result<(), StoreError> {
        // SQLite: by its writer, with the other writes waiting (`writer.rs`).
        if let (Backend::Sqlite, Some(queue)) = (self.backend, &self.writer) {
            // The writing thread gone (it panicked): written here instead.
            if let Ok(done) = queue.ledger(vec![LedgerBinds::of(&row)], durability).await {
                return done;
            }
        }
        let mut tx = self.begin_with(durability).await?;
        write_ledger_in(&mut tx, row).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Claims left `settling` (a transaction was signed and maybe sent, no outcome recorded)
    /// last touched at or before `older_than`, except those whose deferred item is still queued
    /// (its worker owns those; a finished item's claim left `settling` is the reconciler's).
    pub async fn settling_claims(
        &self,
        older_than: i64,
        limit: i64,
    ) -> Result<Vec<SettlingClaim>, StoreError> {
        let rows = sqlx::query(
            "SELECT c.id, c.network, c.asset, c.payer, c.amount, c.tenant, c.route, c.tx_hash, c.valid_before, c.tx_raw, c.nonce, c.tx_replaced, c.updated_at
             FROM payment_claims c
             WHERE c.status = 'settling' AND c.tx_hash IS NOT NULL AND c.updated_at <= $1
               AND NOT EXISTS (SELECT 1 FROM settlement_queue q
                               WHERE q.claim_id = c.id AND q.status = 'queued')
             ORDER BY c.id LIMIT $2",
        )
        .bind(older_than)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| SettlingClaim {
                claim_id: r.get(0),
                network: r.get(1),
                asset: r.get(2),
                payer: r.get(3),
                amount: r.get(4),
                tenant: r.get(5),
                route: r.get(6),
                tx_hash: r.get(7),
                valid_before: r.get(8),
                tx_raw: r.get(9),
                nonce: r.get(10),
                tx_replaced: r
                    .get::<Option<String>, _>(11)
                    .map(|t| t.split_whitespace().map(str::to_string).collect())
                    .unwrap_or_default(),
                touched_at: r.get(12),
            })
            .collect())
    }

    /// Records a settlement found after the fact for a `settling` claim.
    pub async fn record_reconciled(
        &self,
        c: &SettlingClaim,
        pay_to: &str,
        s: &Settlement,
    ) -> Result<(), StoreError> {
        self.write_ledger(
            LedgerRow {
                claim_id: c.claim_id,
                network: &c.network,
                asset: &c.asset,
                payer: &s.payer,
                pay_to,
                amount: &c.amount,
                settlement: s,
                tenant: &c.tenant,
                route: &c.route,
            },
            Durability::Synced,
        )
        .await
    }

    /// The ledger, newest first.
    pub async fn ledger(&self, limit: i64) -> Result<Vec<LedgerEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT claim_id, network, asset, payer, pay_to, amount, tx_hash, block_number, tenant, route, settled_at
             FROM settlements ORDER BY id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| LedgerEntry {
                claim_id: r.get(0),
                network: r.get(1),
                asset: r.get(2),
                payer: r.get(3),
                pay_to: r.get(4),
                amount: r.get(5),
                tx_hash: r.get(6),
                block_number: r.get(7),
                tenant: r.get(8),
                route: r.get(9),
                settled_at: r.get(10),
            })
            .collect())
    }
}

/// A ledger row's values, owned: a row travels to SQLite's writer (`writer.rs`, which binds them
/// in `round.rs`).
pub(super) struct LedgerBinds {
    pub(super) claim_id: i64,
    pub(super) network: String,
    pub(super) asset: String,
    pub(super) payer: String,
    pub(super) pay_to: String,
    pub(super) amount: String,
    pub(super) tx_hash: String,
    pub(super) block_number: i64,
    pub(super) tenant: String,
    pub(super) route: String,
}

impl LedgerBinds {
    /// The row's eleven values in `ledger_insert!`'s order, `settled_at` last.
    fn bind_row<'q>(&'q self, q: AnyQuery<'q>, settled_at: i64) -> AnyQuery<'q> {
        q.bind(self.claim_id)
            .bind(&self.network)
            .bind(&self.asset)
            .bind(&self.payer)
            .bind(&self.pay_to)
            .bind(&self.amount)
            .bind(&self.tx_hash)
            .bind(self.block_number)
            .bind(&self.tenant)
            .bind(&self.route)
            .bind(settled_at)
    }

    fn of(row: &LedgerRow<'_>) -> Self {
        LedgerBinds {
            claim_id: row.claim_id,
            network: row.network.to_string(),
            asset: row.asset.to_string(),
            payer: row.payer.to_string(),
            pay_to: row.pay_to.to_string(),
            amount: row.amount.to_string(),
            tx_hash: row.settlement.transaction.clone(),
            block_number: row.settlement.block_number as i64,
            tenant: row.tenant.to_string(),
            route: row.route.to_string(),
        }
    }
}

/// A claim settled: `$1` its transaction, `$2` now, `$3` the claim, `$4` now in milliseconds.
/// One text for `write_ledger_in` and SQLite's writer (`round.rs`).
pub(super) const SETTLED_SQL: &str =
    "UPDATE payment_claims SET status = 'settled', tx_hash = $1, error = NULL, updated_at = $2,
            settled_at_ms = $4
     WHERE id = $3";

/// The ledger row and the claim marked settled, inside `tx`.
pub(super) async fn write_ledger_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    row: LedgerRow<'_>,
) -> Result<(), StoreError> {
    let t = now();
    sqlx::query(ledger_insert!())
        .bind(row.claim_id)
        .bind(row.network)
        .bind(row.asset)
        .bind(row.payer)
        .bind(row.pay_to)
        .bind(row.amount)
        .bind(&row.settlement.transaction)
        .bind(row.settlement.block_number as i64)
        .bind(row.tenant)
        .bind(row.route)
        .bind(t)
        .execute(&mut **tx)
        .await?;
    sqlx::query(SETTLED_SQL)
        .bind(&row.settlement.transaction)
        .bind(t)
        .bind(row.claim_id)
        .bind(now_ms())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Many ledger rows, and their claims marked settled, inside a transaction on `conn`: one
/// insert for the rows and one update per settlement transaction, where a statement per row cost
/// a round trip each (Postgres, and SQLite's pools should its writer be gone). The same effect
/// as `write_ledger_in` for each row.
pub(super) async fn write_rows_in(
    conn: &mut AnyConnection,
    rows: &[&LedgerBinds],
) -> Result<(), StoreError> {
    // Eleven parameters a row: well under SQLite's and Postgres's limits.
    const CHUNK: usize = 256;
    let (t, t_ms) = (now(), now_ms());
    for chunk in rows.chunks(CHUNK) {
        let mut sql = String::from(ledger_columns!());
        sql.push_str(" VALUES ");
        for i in 0..chunk.len() {
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push('(');
            sql.push_str(&placeholders(1 + 11 * i, 11));
            sql.push(')');
        }
        sql.push_str(" ON CONFLICT (claim_id) DO NOTHING");
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for b in chunk {
            q = b.bind_row(q, t);
        }
        q.execute(&mut *conn).await?;
    }
    // The claims, by the transaction that settled them (a batch's share one).
    let mut by_tx: Vec<(&str, Vec<i64>)> = Vec::new();
    for b in rows {
        match by_tx.iter_mut().find(|(tx, _)| *tx == b.tx_hash) {
            Some((_, ids)) => ids.push(b.claim_id),
            None => by_tx.push((&b.tx_hash, vec![b.claim_id])),
        }
    }
    for (tx_hash, ids) in by_tx {
        for ids in ids.chunks(CHUNK) {
            let sql = format!(
                "UPDATE payment_claims SET status = 'settled', tx_hash = $1, error = NULL, updated_at = $2,
                        settled_at_ms = $3
                 WHERE id IN ({})",
                placeholders(4, ids.len())
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(tx_hash)
                .bind(t)
                .bind(t_ms);
            for id in ids {
                q = q.bind(id);
            }
            q.execute(&mut *conn).await?;
        }
    }
    Ok(())
}
