//! Plan billing: how a tenant's tier follows what it pays for.
//!
//! - `stripe.rs`: Stripe subscriptions. `Stripe-Signature` parsing and verification, and each
//!   event's meaning for a tenant's plan, as plain functions; the one HTTP call (creating a
//!   Checkout session) over reqwest.
//! - `plans.rs`: plans paid with x402 itself: each tier's price as byte-stable x402 offers to the
//!   operator, built by `pricing` exactly as a route's are. Taking the payment is the payment
//!   core's (`payments`), never this module's.
//!
//! What each billing state means for a tenant (the management API applies it, `store` records it):
//!
//! | Stripe subscription | Tier | Billing status |
//! |---|---|---|
//! | `active`, `trialing` | the tier of its price (`billing.stripe.prices`) | `active` |
//! | `past_due`, or `invoice.payment_failed` | kept: Stripe is retrying the card | `past_due` |
//! | `unpaid`, `canceled`, `incomplete_expired`, `paused`, or deleted | `free` | `canceled` |
//! | `incomplete` (first payment not made yet) | unchanged; the event is ignored | - |
//!
//! Billing never suspends a tenant: a lapsed plan falls back to `free`, so the tenant's own paying
//! clients keep being served within the free quota. Suspension stays the operator's decision.
//!
//! May import: config, pricing, routes (value types), store (value types), x402. reqwest is used
//! here only.

pub mod plans;
pub mod stripe;

/// The tier a lapsed or cancelled plan falls back to (built in, always present).
pub const FREE_TIER: &str = "free";
