//! Background settlement services: the deferred-settlement worker (`worker.rs`), the reconciler
//! of settlements whose outcome was never recorded (`reconcile.rs`), and the settler-lease keeper
//! (`leases.rs`). Settling itself is `payments::settle`.
//! May import: payments (the core, chain value types, lanes), store, metrics.

pub mod leases;
pub mod reconcile;
pub mod worker;
