//! The deferred-settlement queue: written before the response goes out, so a queued payment
//! survives a restart; its signed transaction is stored before it is sent.

use super::*;
use crate::x402::redact;

impl Store {
    /// Queues a deferred settlement; durable once this returns.
    pub async fn enqueue(&self, claim_id: i64, v: &Verified) -> Result<(), StoreError> {
        let t = now();
        let json = queue_format::encode(v)?;
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO settlement_queue (claim_id, verified, format, status, attempts, next_attempt_at, created_at, updated_at)
             VALUES ($1, $2, $3, 'queued', 0, $4, $4, $4)
             ON CONFLICT (claim_id) DO NOTHING",
        )
        .bind(claim_id)
        .bind(json)
        .bind(queue_format::CURRENT)
        .bind(t)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE payment_claims SET status = 'queued', updated_at = $1 WHERE id = $2")
            .bind(t)
            .bind(claim_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Deferred settlements due now, oldest first.
    pub async fn due(&self, limit: i64) -> Result<Vec<QueuedSettlement>, StoreError> {
        let rows = sqlx::query(
            "SELECT q.claim_id, q.verified, q.attempts, q.prepared, c.tenant, c.route, q.format
             FROM settlement_queue q JOIN payment_claims c ON c.id = q.claim_id
             WHERE q.status = 'queued' AND q.next_attempt_at <= $1
             ORDER BY q.next_attempt_at, q.claim_id
             LIMIT $2",
        )
        .bind(now())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(queued_from_row).collect()
    }

    /// How many deferred settlements wait in the queue, and when the oldest was queued (Unix
    /// seconds), for metrics. One indexed query.
    pub async fn queue_stats(&self) -> Result<(i64, Option<i64>), StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*), MIN(created_at) FROM settlement_queue WHERE status = 'queued'",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok((row.get(0), row.get(1)))
    }

    /// Saves the signed transaction of a deferred settlement before it is sent: the item and its
    /// claim name it in one transaction (both or neither).
    pub async fn queue_prepared(
        &self,
        claim_id: i64,
        p: &PreparedSettlement,
    ) -> Result<(), StoreError> {
        self.queue_prepared_batch(&[claim_id], p).await
    }

    /// `queue_prepared` for every item one batch transaction settles, in one transaction: all
    /// items and claims name it, or none does.
    pub async fn queue_prepared_batch(
        &self,
        claim_ids: &[i64],
        p: &PreparedSettlement,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_string(p).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut tx = self.pool.begin().await?;
        for &claim_id in claim_ids {
            sqlx::query(
                "UPDATE settlement_queue SET prepared = $1, updated_at = $2 WHERE claim_id = $3",
            )
            .bind(&json)
            .bind(now())
            .bind(claim_id)
            .execute(&mut *tx)
            .await?;
            super::mark_settling_on(&mut *tx, claim_id, p).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Schedules another attempt; `forget_prepared` drops a signed tx that can no longer land
    /// (its settler nonce was taken by another transaction), unless its claim names replaced
    /// transactions: then one of them may have landed, and the attempt that asked to forget read
    /// the item before another member of its batch moved it to a replacement (the item holds
    /// that replacement now, which the next attempt sends and watches with the rest).
    pub async fn queue_retry(
        &self,
        claim_id: i64,
        attempts: i64,
        next_at: i64,
        error: &str,
        forget_prepared: bool,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE settlement_queue SET attempts = $1, next_attempt_at = $2, last_error = $3,
                prepared = CASE WHEN $4 = 1 AND NOT EXISTS (
                    SELECT 1 FROM payment_claims c
                    WHERE c.id = settlement_queue.claim_id AND c.tx_replaced IS NOT NULL)
                  THEN NULL ELSE prepared END,
                updated_at = $5
             WHERE claim_id = $6",
        )
        .bind(attempts)
        .bind(next_at)
        .bind(redact::scrub(error))
        .bind(forget_prepared as i64)
        .bind(now())
        .bind(claim_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A deferred settlement that landed: its ledger row, its claim settled and its queue item
    /// done, in one transaction. Apart, a failure between the writes could leave the item queued
    /// behind a settled claim (harmless, it is recorded again) or, worse, the reverse.
    pub async fn queue_settled(
        &self,
        claim_id: i64,
        v: &Verified,
        s: &Settlement,
        ctx: &ClaimContext<'_>,
    ) -> Result<(), StoreError> {
        let ctx = ClaimContext {
            tenant: ctx.tenant,
            route: ctx.route,
        };
        self.queue_settled_batch(&[(claim_id, v, s, ctx)]).await
    }

    /// `queue_settled` for the landed items of one batch transaction, in one transaction.
    pub async fn queue_settled_batch(
        &self,
        landed: &[(i64, &Verified, &Settlement, ClaimContext<'_>)],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for (claim_id, v, s, ctx) in landed {
            super::ledger::write_ledger_in(&mut tx, LedgerRow::of_verified(*claim_id, v, s, ctx))
                .await?;
            finish_in(&mut tx, *claim_id, QueueStatus::Done, None).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// A deferred settlement that never will land: its claim failed (its count given back) and
    /// its queue item failed, in one transaction. Apart, a lost write left the item finished and
    /// the claim `settling` for good, which neither the worker (it takes queued items) nor the
    /// reconciler (it left claims with a queue item to the worker) would look at again (found
    /// by the chaos suite: `postgres` seeds 6 and 30).
    pub async fn queue_fail(&self, claim_id: i64, why: &str) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        super::fail_claim(&mut tx, claim_id, why).await?;
        finish_in(&mut tx, claim_id, QueueStatus::Failed, Some(why)).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn queue_finish(
        &self,
        claim_id: i64,
        status: QueueStatus,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        finish_in(&mut tx, claim_id, status, error).await?;
        tx.commit().await?;
        Ok(())
    }
}

async fn finish_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    claim_id: i64,
    status: QueueStatus,
    error: Option<&str>,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE settlement_queue SET status = $1, last_error = $2, updated_at = $3 WHERE claim_id = $4")
        .bind(status.as_str())
        .bind(error.map(redact::scrub))
        .bind(now())
        .bind(claim_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

fn queued_from_row(r: &AnyRow) -> Result<QueuedSettlement, StoreError> {
    let verified: String = r.get(1);
    let prepared: Option<String> = r.get(3);
    Ok(QueuedSettlement {
        claim_id: r.get(0),
        verified: queue_format::decode(r.get(6), &verified)?,
        attempts: r.get(2),
        prepared: prepared
            .map(|p| serde_json::from_str(&p))
            .transpose()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?,
        tenant: r.get(4),
        route: r.get(5),
    })
}
