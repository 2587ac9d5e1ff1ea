//! The claim lifecycle: a payment's claim (consume-once, counted toward its tenant's month), its
//! release when not charged, its settlement record before the transaction is sent
//! (`settling`, one claim or a batch's), a replacement's record, its failure, and the payer's
//! exposure read with it, on the pool: Postgres's every write, and on SQLite all but a payment's
//! claim and settlement record, which SQLite's writer (`writer.rs`, `round.rs`) makes with the
//! same statements' texts (these are their fallbacks, should its thread be gone).

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::tenants::{self, period_of};
use super::{
    now, placeholders, ClaimContext, ClaimOutcome, Durability, ExposureQuery, PayerExposure, Store,
    StoreError, FAILED_REASON, RELEASED_REASON,
};
use crate::payments::chain::{PreparedSettlement, Verified};
use crate::x402::redact;

/// A claim's settlement record: `$1` transaction, `$2` its bytes, `$3` now, `$4` the claim. One
/// text for `mark_settling_on` and SQLite's writer (`round.rs`).
pub(super) const MARK_SQL: &str =
    "UPDATE payment_claims SET status = 'settling', tx_hash = $1, tx_raw = $2, tx_replaced = NULL, error = NULL, updated_at = $3
     WHERE id = $4 AND status IN ('claimed', 'queued', 'settling')
       AND (status <> 'settling' OR tx_replaced IS NULL)";

/// `MARK_SQL` for `n` claims, `$4` onwards.
pub(super) fn mark_batch_sql(n: usize) -> String {
    format!(
        "UPDATE payment_claims SET status = 'settling', tx_hash = $1, tx_raw = $2, tx_replaced = NULL, error = NULL, updated_at = $3
         WHERE status IN ('claimed', 'queued', 'settling')
           AND (status <> 'settling' OR tx_replaced IS NULL) AND id IN ({})",
        placeholders(4, n)
    )
}

/// Which of `n` claims (`$1` onwards) is finished: after a batch's record moved fewer than all.
pub(super) fn finished_sql(n: usize) -> String {
    format!(
        "SELECT id FROM payment_claims WHERE id IN ({}) AND status NOT IN ('claimed', 'queued', 'settling')",
        placeholders(1, n)
    )
}

/// Names the signed transaction on its claim (`settling`), on `executor` (a transaction, or the
/// pool for one claim alone), before it is sent. Only an open claim (claimed, queued, or settling
/// under an earlier transaction) moves: a claim released, failed or settled meanwhile (a write
/// that reached the database late, a reconciler that got there first) refuses, and its
/// transaction must then never be sent.
pub(super) async fn mark_settling_on<'e, E>(
    executor: E,
    claim_id: i64,
    p: &PreparedSettlement,
) -> Result<(), StoreError>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let done = sqlx::query(MARK_SQL)
        .bind(&p.transaction)
        .bind(&p.raw)
        .bind(now())
        .bind(claim_id)
        .execute(executor)
        .await?;
    if done.rows_affected() != 1 {
        return Err(StoreError::ClaimFinished(claim_id));
    }
    Ok(())
}

/// `mark_settling_on` for every claim of a batch transaction, as one statement: all of them
/// name it, or (one finished claim among them) `ClaimFinished` names a finished one, and the
/// caller must roll back what the statement did (Postgres, and SQLite's pools should its writer
/// be gone). A statement per claim cost a round trip each on the batch's way to the chain.
async fn mark_batch_on(
    conn: &mut AnyConnection,
    claim_ids: &[i64],
    p: &PreparedSettlement,
) -> Result<(), StoreError> {
    debug_assert!(!claim_ids.is_empty(), "a batch has members");
    let sql = mark_batch_sql(claim_ids.len());
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(&p.transaction)
        .bind(&p.raw)
        .bind(now());
    for id in claim_ids {
        q = q.bind(id);
    }
    let done = q.execute(&mut *conn).await?;
    // A claim named twice moves once.
    let mut distinct = claim_ids.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    if done.rows_affected() == distinct.len() as u64 {
        return Ok(());
    }
    // Which one finished, for the caller's log: any that did not move.
    let mut q = sqlx::query(sqlx::AssertSqlSafe(finished_sql(claim_ids.len())));
    for id in claim_ids {
        q = q.bind(id);
    }
    let finished = q.fetch_optional(&mut *conn).await?;
    let id = match finished {
        Some(row) => row.try_get::<i64, _>(0)?,
        None => claim_ids[0],
    };
    Err(StoreError::ClaimFinished(id))
}

/// The claim itself, inside `tx`: the row on the UNIQUE key and the month's count. Anything but
/// `Claimed` must be rolled back by the caller (a quota refusal has inserted the row).
async fn claim_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    v: &Verified,
    ctx: &ClaimContext<'_>,
    limit: Option<i64>,
    t: i64,
) -> Result<ClaimOutcome, StoreError> {
    let period = period_of(t);
    let row = sqlx::query(concat!(claim_insert!(), " RETURNING id"))
        .bind(&v.key.network)
        .bind(&v.key.asset)
        .bind(&v.key.payer)
        .bind(&v.key.nonce)
        .bind(ctx.tenant)
        .bind(ctx.route)
        .bind(&v.amount)
        .bind(v.expires_at.min(i64::MAX as u64) as i64)
        .bind(t)
        .bind(&period)
        .fetch_optional(&mut **tx)
        .await?;
    let Some(row) = row else {
        return Ok(ClaimOutcome::Duplicate);
    };
    if !tenants::count_in(&mut **tx, ctx.tenant, &period, limit).await? {
        return Ok(ClaimOutcome::QuotaExceeded);
    }
    Ok(ClaimOutcome::Claimed(row.get::<i64, _>(0)))
}

/// Moves a claim to `failed` inside `tx`. Nothing moved, so the tenant's month gets its verified
/// payment back, once: only the first transition into `failed` counts (a settled claim never
/// fails). `why` is stored as shown to tenants: see [`Store::release`].
pub(crate) async fn fail_claim(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    claim_id: i64,
    why: &str,
) -> Result<(), StoreError> {
    let why = redact::with_reason(FAILED_REASON, why);
    let row = sqlx::query(
        "UPDATE payment_claims SET status = 'failed', error = $1, updated_at = $2
         WHERE id = $3 AND status NOT IN ('failed', 'settled', 'released')
         RETURNING tenant, period",
    )
    .bind(&why)
    .bind(now())
    .bind(claim_id)
    .fetch_optional(&mut **tx)
    .await?;
    if let Some(row) = row {
        uncount(tx, &row).await?;
    }
    Ok(())
}

/// Gives a claim's verified payment back to its tenant's month, inside the transaction that
/// moved the claim to `released` or `failed` (`row`: its `tenant, period`).
async fn uncount(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    row: &AnyRow,
) -> Result<(), StoreError> {
    let (tenant, period): (String, Option<String>) = (row.try_get(0)?, row.try_get(1)?);
    if let Some(period) = period {
        sqlx::query(
            "UPDATE usage_counters SET verified = verified - 1
             WHERE tenant_id = $1 AND period = $2 AND verified > 0",
        )
        .bind(tenant)
        .bind(period)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// `payer_exposure`'s query: rows of (amount, kind), `kind` being `unsettled` (each unsettled
/// claim's amount, at most `limit` of them) or `settled` (one row if a claim was settled since
/// the parameter `since`). `$1`, `$2`, `$3`: network, asset, payer. The limit is written into
/// the text, not bound: SQLite marks a bound `LIMIT` as one its plan depends on, and binding it
/// again (every call) makes it prepare the statement anew (callgrind: about 160k instructions a
/// payment). The text is the same for the one limit callers use, so it stays cached.
pub(super) fn exposure_sql(limit: i64, since: &str) -> String {
    format!(
        "SELECT o.amount, 'unsettled' AS kind FROM (
             SELECT amount FROM payment_claims
             WHERE network = $1 AND asset = $2 AND payer = $3
               AND status IN ('claimed', 'settling', 'queued')
             LIMIT {limit}) o
         UNION ALL
         SELECT '0', 'settled' FROM (
             SELECT 1 AS one FROM payment_claims
             WHERE network = $1 AND asset = $2 AND payer = $3
               AND status = 'settled' AND settled_at_ms >= {since}
             LIMIT 1) s",
        limit = limit.max(0)
    )
}

impl PayerExposure {
    /// Sums `exposure_sql`'s rows, their kind in column `kind` and amount in column `amount`.
    fn of_rows<'r>(
        rows: impl Iterator<Item = &'r AnyRow>,
        kind: usize,
        amount: usize,
    ) -> Result<Self, StoreError> {
        let mut exposure = PayerExposure::default();
        for r in rows {
            let (k, a): (String, String) = (r.try_get(kind)?, r.try_get(amount)?);
            exposure.add(&k, &a)?;
        }
        Ok(exposure)
    }

    /// Counts one of `exposure_sql`'s rows.
    pub(super) fn add(&mut self, kind: &str, amount: &str) -> Result<(), StoreError> {
        if kind == "settled" {
            self.settled_since = true;
            return Ok(());
        }
        let a: u128 = amount
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("claim amount `{amount}`")))?;
        self.unsettled += 1;
        self.owed = self.owed.saturating_add(a);
        Ok(())
    }
}

impl Store {
    /// Claims a payment for one request and counts it toward the tenant's month, in one
    /// transaction: the claim is one atomic statement on the UNIQUE key (a replay gets
    /// `Duplicate`), the count one conditional upsert that refuses to pass `limit` (`None`:
    /// unlimited). A claim released as not charged can be taken again. `durability`: see
    /// `durability.rs` for when a claim may be relaxed.
    pub async fn claim(
        &self,
        v: &Verified,
        ctx: &ClaimContext<'_>,
        limit: Option<i64>,
        durability: Durability,
    ) -> Result<ClaimOutcome, StoreError> {
        Ok(self.claim_with(v, ctx, limit, durability, None).await?.0)
    }

    /// `claim`, and for a claim made the payer's exposure (`payer_exposure`) when the store
    /// could read it in the claim's own transaction, after the claim's insert: SQLite, through
    /// its writer (`writer.rs`, `round.rs`). SQLite has one writer, so a claim racing this one
    /// is made after it (in a later round, or later in the same one) and its own read sees this
    /// one; as reading after the commit does. `None`: read it after the commit
    /// (`payer_exposure`).
    pub async fn claim_exposing(
        &self,
        v: &Verified,
        ctx: &ClaimContext<'_>,
        limit: Option<i64>,
        durability: Durability,
        exposure: ExposureQuery,
    ) -> Result<(ClaimOutcome, Option<PayerExposure>), StoreError> {
        self.claim_with(v, ctx, limit, durability, Some(exposure))
            .await
    }

    async fn claim_with(
        &self,
        v: &Verified,
        ctx: &ClaimContext<'_>,
        limit: Option<i64>,
        durability: Durability,
        exposure: Option<ExposureQuery>,
    ) -> Result<(ClaimOutcome, Option<PayerExposure>), StoreError> {
        if let Some(queue) = &self.writer {
            if let Some(outcome) = queue.claim(v, ctx, limit, durability, exposure).await {
                return outcome;
            }
        }
        let mut tx = self.begin_with(durability).await?;
        let outcome = claim_in(&mut tx, v, ctx, limit, now()).await?;
        match outcome {
            ClaimOutcome::Claimed(_) => tx.commit().await?,
            _ => tx.rollback().await?,
        }
        Ok((outcome, None))
    }

    /// Gives a claim back: the payment was not charged and may be presented again. Only a claim
    /// with no settlement transaction in flight (`claimed`) can be released: a `settling` one may
    /// still land, and a settled, queued or failed one must never become claimable again.
    /// Its verified payment is given back to the tenant's month too.
    pub async fn release(&self, claim_id: i64, why: &str) -> Result<bool, StoreError> {
        // Tenants read this text (`payments[].error`): a reason code and a scrubbed message,
        // never a raw client error (an RPC error names the URL, API key included).
        let why = redact::with_reason(RELEASED_REASON, why);
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "UPDATE payment_claims SET status = 'released', error = $1, updated_at = $2
             WHERE id = $3 AND status = 'claimed'
             RETURNING tenant, period",
        )
        .bind(&why)
        .bind(now())
        .bind(claim_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            return Ok(false);
        };
        uncount(&mut tx, &row).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Releases `claimed` claims whose authorization expired before `expired_before` (Unix
    /// seconds): no request can settle them any more, so whatever left them open (a gateway
    /// killed mid-request, a claim whose commit was acknowledged to nobody because the database
    /// connection broke) they are not charged. Gives their payers' exposure and tenants' months
    /// back. Returns how many it released.
    pub async fn release_expired_claims(&self, expired_before: i64) -> Result<usize, StoreError> {
        let ids: Vec<i64> = sqlx::query(
            "SELECT id FROM payment_claims WHERE status = 'claimed' AND valid_before < $1 LIMIT 500",
        )
        .bind(expired_before)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
        let mut released = 0;
        for id in ids {
            if self
                .release(
                    id,
                    "the request ended without an outcome and the authorization expired",
                )
                .await?
            {
                released += 1;
            }
        }
        Ok(released)
    }

    /// Records a signed settlement transaction, hash and bytes, before it is sent: from here on
    /// the claim is `settling`, and whatever happens the transaction can be looked up and sent
    /// again.
    pub async fn mark_settling(
        &self,
        claim_id: i64,
        p: &PreparedSettlement,
    ) -> Result<(), StoreError> {
        // SQLite: by its writer (`writer.rs`), in a round's transaction with the other writes
        // waiting. Postgres: one statement, atomic and synced on its own.
        if let Some(queue) = &self.writer {
            if let Some(done) = queue.mark(&[claim_id], p).await {
                return done;
            }
        }
        mark_settling_on(&self.pool, claim_id, p).await
    }

    /// `mark_settling` for every claim a batch transaction settles, in one transaction (one
    /// commit for the lot): all of them name it, or none does. One finished claim among them
    /// refuses the lot (`ClaimFinished`), and the transaction must then never be sent.
    pub async fn mark_settling_batch(
        &self,
        claim_ids: &[i64],
        p: &PreparedSettlement,
    ) -> Result<(), StoreError> {
        // Nothing to name (no caller sends an empty batch; `id IN ()` would answer Ok anyway).
        if claim_ids.is_empty() {
            return Ok(());
        }
        // SQLite: by its writer, in one transaction with the other writes waiting
        // (`writer.rs`).
        if let Some(queue) = &self.writer {
            if let Some(done) = queue.mark(claim_ids, p).await {
                return done;
            }
        }
        let mut tx = self.pool.begin().await?;
        // A refusal drops `tx`: rolled back.
        mark_batch_on(&mut tx, claim_ids, p).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The claims of `claim_ids` (one payment's, or a batch's) that name the sent settlement
    /// `current` move to `p`, a transaction with the same nonce (its replacement at higher fees,
    /// or, the node having refused that, the one it replaced), which names the others it may be
    /// mined instead of (`p.replaces`, `current` among them): written durably on the claims,
    /// and on their deferred items, before `p` is sent, so a crash at any point leaves every
    /// transaction that may be mined named. Every claim still settling on `current` moves (a
    /// batch's other members too), or none does: one of `claim_ids` finished meanwhile (its
    /// settlement was recorded: one of them was mined) or moved to another transaction (another
    /// member's attempt replaced it first) refuses with `ClaimFinished`, and `p` must then never
    /// be sent.
    pub async fn record_replacement(
        &self,
        claim_ids: &[i64],
        current: &str,
        p: &PreparedSettlement,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_string(p).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let earlier = p.replaces.join(" ");
        let mut distinct = claim_ids.to_vec();
        distinct.sort_unstable();
        distinct.dedup();
        let now = now();
        let mut tx = self.pool.begin().await?;
        // One statement's text for both updates below, `$6` onwards naming claims or not.
        let moving = |only: &str| {
            let sql = format!(
                "UPDATE payment_claims SET tx_hash = $1, tx_raw = $2, tx_replaced = $3, updated_at = $4
                 WHERE status = 'settling' AND tx_hash = $5{only}"
            );
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(p.transaction.clone())
                .bind(p.raw.clone())
                .bind(earlier.clone())
                .bind(now)
                .bind(current.to_string())
        };
        // The caller's claims first, the update itself the check (a `SELECT` first would let two
        // attempts replacing one transaction at once both pass it under Postgres' read
        // committed, and both send): all of them move, or none.
        let mut q = moving(&format!(" AND id IN ({})", placeholders(6, distinct.len())));
        for id in &distinct {
            q = q.bind(id);
        }
        if q.execute(&mut *tx).await?.rows_affected() != distinct.len() as u64 {
            tx.rollback().await?;
            return Err(StoreError::ClaimFinished(distinct[0]));
        }
        // Then every other claim the transaction settles, not only the caller's: a deferred
        // batch's members are retried one by one, and a member left naming the old transactions
        // would not watch the new one, which settles it too.
        moving("").execute(&mut *tx).await?;
        sqlx::query(
            "UPDATE settlement_queue SET prepared = $1, updated_at = $2
             WHERE prepared IS NOT NULL AND claim_id IN (
                 SELECT id FROM payment_claims WHERE status = 'settling' AND tx_hash = $3)",
        )
        .bind(&json)
        .bind(now)
        .bind(&p.transaction)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The settlement transaction `tx_hash` was never broadcast (the node refused it, or it never
    /// reached the node): the claim goes back to `claimed`, so it may be settled anew or released.
    /// Returns whether it did (it no longer names that transaction otherwise).
    pub async fn unmark_settling(&self, claim_id: i64, tx_hash: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE payment_claims SET status = 'claimed', tx_hash = NULL, tx_raw = NULL, tx_replaced = NULL, updated_at = $1
             WHERE id = $2 AND status = 'settling' AND tx_hash = $3",
        )
        .bind(now())
        .bind(claim_id)
        .bind(tx_hash)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Marks a claim failed. `why` is stored as shown to tenants: see [`Store::release`].
    pub async fn mark_failed(&self, claim_id: i64, why: &str) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        fail_claim(&mut tx, claim_id, why).await?;
        tx.commit().await?;
        Ok(())
    }

    /// What a payer has promised but not yet paid in one asset, to hold against its balance, in
    /// one round trip: its unsettled claims (claimed, settling or queued; at most `limit` of them),
    /// how many and their sum, and whether a payment of its was settled at or after `since_ms`
    /// (Unix milliseconds), whose transfer may have spent what an earlier balance check saw.
    /// Instances sharing a database compare their clocks here: keep them synchronized (NTP).
    pub async fn payer_exposure(
        &self,
        network: &str,
        asset: &str,
        payer: &str,
        since_ms: i64,
        limit: i64,
    ) -> Result<PayerExposure, StoreError> {
        let sql = exposure_sql(limit, "$4");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(network)
            .bind(asset)
            .bind(payer)
            .bind(since_ms)
            .fetch_all(&self.pool)
            .await?;
        PayerExposure::of_rows(rows.iter(), 1, 0)
    }

    /// The status of a claim, by id.
    pub async fn claim_status(&self, claim_id: i64) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT status FROM payment_claims WHERE id = $1")
            .bind(claim_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.get::<String, _>(0)))
    }

    /// Counts claims by status (operators' view, and tests).
    pub async fn count_claims(&self, status: &str) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) FROM payment_claims WHERE status = $1")
            .bind(status)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.get::<i64, _>(0))
    }
}
