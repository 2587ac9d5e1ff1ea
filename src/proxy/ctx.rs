//! Per-request context: decisions made in `request_filter`, carried to later phases so they are
//! never recomputed (and `upstream_peer`, which runs again on retry, reads only from here).

use std::sync::Arc;

use crate::routes::Route;

#[derive(Debug, Default)]
pub struct RequestCtx {
    /// The matched route; `None` until matched, and for requests answered by the gateway itself.
    pub route: Option<Arc<Route>>,
    /// The normalized path, when it differs from what the client sent; forwarded instead.
    pub rewritten_path: Option<String>,
    /// The client's `Host`, for `X-Forwarded-Host` once `Host` is rewritten to the upstream's.
    pub client_host: Option<String>,
}
