//! Leases on settler keys: which instance may sign with which key, so that instances sharing one
//! database never take the same nonce. A lease lapses at `expires_at` unless its holder renews it;
//! taking one is a single conditional upsert, so two instances racing for a key cannot both win.

use super::*;

impl Store {
    /// Takes the lease on `settler` of `network` for `holder` until `expires_at`, or renews it if
    /// `holder` has it. True when `holder` holds it now; false when another holder's lease has not
    /// lapsed.
    pub async fn lease_settler(
        &self,
        network: &str,
        settler: &str,
        holder: &str,
        expires_at: i64,
    ) -> Result<bool, StoreError> {
        let row = sqlx::query(
            "INSERT INTO settler_leases (network, settler, holder, expires_at)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (network, settler) DO UPDATE
                SET holder = excluded.holder, expires_at = excluded.expires_at
                WHERE settler_leases.holder = excluded.holder OR settler_leases.expires_at < $5
             RETURNING holder",
        )
        .bind(network)
        .bind(settler.to_ascii_lowercase())
        .bind(holder)
        .bind(expires_at)
        .bind(now())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
    }

    /// Gives a lease back at once (a clean shutdown), if `holder` still has it.
    pub async fn release_settler(
        &self,
        network: &str,
        settler: &str,
        holder: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "DELETE FROM settler_leases WHERE network = $1 AND settler = $2 AND holder = $3",
        )
        .bind(network)
        .bind(settler.to_ascii_lowercase())
        .bind(holder)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Who holds the lease on a settler key, and until when.
    pub async fn settler_lease(
        &self,
        network: &str,
        settler: &str,
    ) -> Result<Option<(String, i64)>, StoreError> {
        let row = sqlx::query(
            "SELECT holder, expires_at FROM settler_leases WHERE network = $1 AND settler = $2",
        )
        .bind(network)
        .bind(settler.to_ascii_lowercase())
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            Some(r) => Some((r.try_get("holder")?, r.try_get("expires_at")?)),
            None => None,
        })
    }
}

impl Store {
    /// Takes a due deferred settlement for `holder` until `until`: true when this holder may work
    /// on it now. Another worker's unexpired lease (an instance sharing the database) refuses it,
    /// so no queue item is ever processed by two workers at once.
    pub async fn take_queued(
        &self,
        claim_id: i64,
        holder: &str,
        until: i64,
    ) -> Result<bool, StoreError> {
        // One instance per SQLite file: whatever an earlier life of this gateway held is ours,
        // and a restart must not wait for its own old leases to lapse.
        let sql = match self.backend {
            Backend::Sqlite => {
                "UPDATE settlement_queue SET holder = $1, lease_until = $2
                 WHERE claim_id = $3 AND status = 'queued' AND $4 = $4"
            }
            Backend::Postgres => {
                "UPDATE settlement_queue SET holder = $1, lease_until = $2
                 WHERE claim_id = $3 AND status = 'queued'
                   AND (lease_until IS NULL OR lease_until < $4 OR holder = $1)"
            }
        };
        let done = sqlx::query(sql)
            .bind(holder)
            .bind(until)
            .bind(claim_id)
            .bind(now())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }
}
