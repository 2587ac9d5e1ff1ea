//! Plan billing: Stripe events applied once each and never out of order, x402-paid periods, and
//! where each billed tenant's plan stands (`tenant_billing`, migration 0008).

use sqlx::Row;

use super::{now, Store, StoreError};

/// A billed tenant's plan status (`tenant_billing.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BillingStatus {
    /// Paid up.
    Active,
    /// A renewal failed; the tier is kept while Stripe retries the card.
    PastDue,
    /// The subscription ended or lapsed; the tenant is back on `free`.
    Canceled,
}

impl BillingStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            BillingStatus::Active => "active",
            BillingStatus::PastDue => "past_due",
            BillingStatus::Canceled => "canceled",
        }
    }
}

/// What a Stripe event does to its tenant, as the store applies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripeUpdate {
    pub event_id: String,
    pub event_type: String,
    /// The event's `created`: the order in which events are applied.
    pub created: i64,
    /// From the subscription's `metadata.tenant_id`; `None` when the object does not carry it
    /// (then the tenant is found by `subscription`).
    pub tenant: Option<String>,
    pub subscription: Option<String>,
    pub customer: Option<String>,
    /// The tier to set, or `None` to keep the current one.
    pub tier: Option<String>,
    pub status: BillingStatus,
}

/// What became of a Stripe event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StripeApplied {
    /// Applied to `tenant`; `tier_changed` when its tier was written.
    Applied { tenant: String, tier_changed: bool },
    /// This event id was processed before: nothing changes.
    Duplicate,
    /// Older than the newest event applied to `tenant`: recorded, nothing changes.
    Stale { tenant: String },
    /// No tenant by the metadata or the subscription: nothing recorded.
    UnknownTenant,
}

/// A billed tenant's plan, for reading.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BillingRecord {
    pub tenant_id: String,
    pub source: String,
    pub status: String,
    pub last_event_at: i64,
    pub customer: Option<String>,
    pub subscription: Option<String>,
    pub paid_until: Option<i64>,
    pub updated_at: i64,
}

impl Store {
    /// Applies a Stripe event in one transaction: recorded by id (a second delivery is a
    /// `Duplicate`), then applied only if it is not older than the newest event applied to the
    /// tenant. The newer-or-equal check is part of the conditional upsert itself, so two events
    /// of one tenant racing (two instances, or Stripe's parallel deliveries) cannot both pass it
    /// on a stale read: the second waits on the first's row lock and re-checks.
    pub async fn apply_stripe_event(&self, u: &StripeUpdate) -> Result<StripeApplied, StoreError> {
        let at = now();
        let mut tx = self.pool.begin().await?;
        let tenant = match &u.tenant {
            Some(t) => Some(t.clone()),
            None => match &u.subscription {
                Some(sub) => sqlx::query(
                    "SELECT tenant_id FROM tenant_billing WHERE subscription = $1 LIMIT 1",
                )
                .bind(sub)
                .fetch_optional(&mut *tx)
                .await?
                .map(|r| r.get::<String, _>(0)),
                None => None,
            },
        };
        let Some(tenant) = tenant else {
            tx.rollback().await?;
            return Ok(StripeApplied::UnknownTenant);
        };
        let exists = sqlx::query("SELECT id FROM tenants WHERE id = $1")
            .bind(&tenant)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        if !exists {
            tx.rollback().await?;
            return Ok(StripeApplied::UnknownTenant);
        }
        let recorded = sqlx::query(
            "INSERT INTO billing_events (event_id, event_type, tenant_id, created, outcome, received_at)
             VALUES ($1, $2, $3, $4, 'applied', $5) ON CONFLICT (event_id) DO NOTHING",
        )
        .bind(&u.event_id)
        .bind(&u.event_type)
        .bind(&tenant)
        .bind(u.created)
        .bind(at)
        .execute(&mut *tx)
        .await?;
        if recorded.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(StripeApplied::Duplicate);
        }
        let newest = sqlx::query(
            "INSERT INTO tenant_billing
                (tenant_id, source, status, last_event_at, customer, subscription, paid_until, updated_at)
             VALUES ($1, 'stripe', $2, $3, $4, $5, NULL, $6)
             ON CONFLICT (tenant_id) DO UPDATE SET source = 'stripe', status = excluded.status,
                last_event_at = excluded.last_event_at,
                customer = COALESCE(excluded.customer, tenant_billing.customer),
                subscription = COALESCE(excluded.subscription, tenant_billing.subscription),
                paid_until = NULL, updated_at = excluded.updated_at
             WHERE tenant_billing.last_event_at <= excluded.last_event_at
             RETURNING tenant_id",
        )
        .bind(&tenant)
        .bind(u.status.as_str())
        .bind(u.created)
        .bind(&u.customer)
        .bind(&u.subscription)
        .bind(at)
        .fetch_optional(&mut *tx)
        .await?;
        if newest.is_none() {
            sqlx::query("UPDATE billing_events SET outcome = 'stale' WHERE event_id = $1")
                .bind(&u.event_id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            return Ok(StripeApplied::Stale { tenant });
        }
        let tier_changed = match &u.tier {
            Some(tier) => {
                sqlx::query("UPDATE tenants SET tier = $1, updated_at = $2 WHERE id = $3")
                    .bind(tier)
                    .bind(at)
                    .bind(&tenant)
                    .execute(&mut *tx)
                    .await?;
                true
            }
            None => false,
        };
        tx.commit().await?;
        Ok(StripeApplied::Applied {
            tenant,
            tier_changed,
        })
    }

    /// Sets a tenant's tier after its x402 payment for one period settled, and returns the end
    /// of the paid period. Paying again for the tier already held extends it from its current
    /// end; any other change starts from now.
    pub async fn apply_x402_plan(
        &self,
        tenant: &str,
        tier: &str,
        period_seconds: i64,
    ) -> Result<i64, StoreError> {
        let at = now();
        let mut tx = self.pool.begin().await?;
        let current = sqlx::query(
            "SELECT t.tier, b.paid_until FROM tenants t
             LEFT JOIN tenant_billing b ON b.tenant_id = t.id WHERE t.id = $1",
        )
        .bind(tenant)
        .fetch_optional(&mut *tx)
        .await?;
        let from = match &current {
            Some(r) => {
                let (held, until): (String, Option<i64>) = (r.try_get(0)?, r.try_get(1)?);
                match until {
                    Some(u) if held == tier && u > at => u,
                    _ => at,
                }
            }
            None => at,
        };
        let paid_until = from.saturating_add(period_seconds);
        sqlx::query("UPDATE tenants SET tier = $1, updated_at = $2 WHERE id = $3")
            .bind(tier)
            .bind(at)
            .bind(tenant)
            .execute(&mut *tx)
            .await?;
        // `last_event_at` moves to now too: a Stripe event created before this payment is older
        // news than it, and must not undo it.
        sqlx::query(
            "INSERT INTO tenant_billing
                (tenant_id, source, status, last_event_at, customer, subscription, paid_until, updated_at)
             VALUES ($1, 'x402', 'active', $2, NULL, NULL, $3, $2)
             ON CONFLICT (tenant_id) DO UPDATE SET source = 'x402', status = 'active',
                last_event_at = CASE WHEN tenant_billing.last_event_at > excluded.last_event_at
                    THEN tenant_billing.last_event_at ELSE excluded.last_event_at END,
                paid_until = excluded.paid_until, updated_at = excluded.updated_at",
        )
        .bind(tenant)
        .bind(at)
        .bind(paid_until)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(paid_until)
    }

    /// A tenant's billing record, if its plan has ever been billed.
    pub async fn billing(&self, tenant: &str) -> Result<Option<BillingRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT tenant_id, source, status, last_event_at, customer, subscription, paid_until,
                updated_at FROM tenant_billing WHERE tenant_id = $1",
        )
        .bind(tenant)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| BillingRecord {
            tenant_id: r.get(0),
            source: r.get(1),
            status: r.get(2),
            last_event_at: r.get(3),
            customer: r.get(4),
            subscription: r.get(5),
            paid_until: r.get(6),
            updated_at: r.get(7),
        }))
    }

    /// How many Stripe events with this id were recorded (0 or 1), and their outcome.
    pub async fn billing_event_outcome(
        &self,
        event_id: &str,
    ) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT outcome FROM billing_events WHERE event_id = $1")
            .bind(event_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.get(0)))
    }
}
