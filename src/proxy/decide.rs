//! The proxy's decisions as plain functions from a request's facts to a `Reply` (what the gateway
//! answers itself) or the next step. `mod.rs` gathers the facts from pingora, calls these in
//! order, and hands any `Reply` to the one renderer in `respond.rs`; none of this touches a
//! socket, so each decision is tested without one.

use std::borrow::Cow;
use std::sync::Arc;

use http::HeaderMap;

use super::gate::{self, PaymentCheck};
use crate::payments::{Admission, PaymentState, SettleOutcome};
use crate::pricing::{Challenge, Offer, Offers};
use crate::routes::{normalize_path, Route, RouteTable};
use crate::tenants::TenantState;
use crate::x402::{PaymentProof, Reason, SettlementResponse};

/// A receipt to attach: its header name (v1 or v2) and the settlement response.
pub type Receipt = (&'static str, SettlementResponse);

/// What the gateway answers itself.
#[derive(Debug, Clone)]
pub enum Body {
    /// `{"error": code, "message": ...}` with this status.
    Error {
        status: u16,
        code: &'static str,
        message: String,
    },
    /// 402 with the challenge (its `error` says why).
    Challenge(Challenge),
    /// 503 `payment_unavailable` with `Retry-After`: our side failed.
    Unavailable(&'static str),
    /// 429 `tenant_quota_exceeded`, with the period and its limit.
    QuotaExceeded { period: String, limit: Option<i64> },
    /// 429 `rate_limited` with `Retry-After`: over a `[rate_limit]` limit.
    RateLimited { retry_after: u64 },
    /// 204 to a CORS preflight of a priced route.
    Preflight {
        methods: String,
        requested: Option<String>,
    },
}

impl Body {
    /// What kind of answer this is, for logs (never its contents).
    pub fn kind(&self) -> &'static str {
        match self {
            Body::Error { code, .. } => code,
            Body::Challenge(_) => "challenge",
            Body::Unavailable(_) => "payment_unavailable",
            Body::QuotaExceeded { .. } => "tenant_quota_exceeded",
            Body::RateLimited { .. } => "rate_limited",
            Body::Preflight { .. } => "preflight",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Reply {
    pub body: Body,
    /// Money moved (or may have): the payer gets its receipt on this answer too.
    pub receipt: Option<Box<Receipt>>,
    /// End the connection after this answer (the client may already speak another protocol, or
    /// sent a request line nobody should read past).
    pub close: bool,
}

impl Reply {
    pub fn new(body: Body) -> Self {
        Reply {
            body,
            receipt: None,
            close: false,
        }
    }

    pub fn error(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Reply::new(Body::Error {
            status,
            code,
            message: message.into(),
        })
    }

    fn closing(mut self) -> Self {
        self.close = true;
        self
    }

    pub fn with_receipt(mut self, receipt: Option<Receipt>) -> Self {
        self.receipt = receipt.map(Box::new);
        self
    }
}

/// The facts of a request line and its headers, as pingora parsed them.
pub struct RequestFacts<'a> {
    pub raw_target: &'a [u8],
    pub method: &'a str,
    pub path: &'a str,
    pub headers: &'a HeaderMap,
    pub host: Option<&'a str>,
    pub max_header_bytes: usize,
}

/// A request matched to a route.
#[derive(Debug)]
pub struct Routed {
    pub route: Arc<Route>,
    /// The path to forward instead of the client's (normalized, or taken out of an absolute-form
    /// target), so the origin gets exactly the path that was routed on.
    pub rewritten_path: Option<String>,
    /// A protocol upgrade allowed through (settled before it opens on a priced route).
    pub upgrade: bool,
}

/// Why a request was answered before routing, for the metrics: `rejected` or `no_route`.
pub type RouteFact = &'static str;

/// Checks the request line and headers, then finds the route: `Routed`, or the reply.
pub fn route_request(
    f: &RequestFacts<'_>,
    routes: &RouteTable,
) -> Result<Routed, (Reply, RouteFact)> {
    let rejected = |r: Reply| (r, "rejected");
    if gate::header_block_size(f.headers) > f.max_header_bytes {
        let msg = format!("request headers exceed {} bytes", f.max_header_bytes);
        return Err(rejected(Reply::error(431, "request_header_too_large", msg)));
    }
    if let Err(r) = gate::check_request_line(f.raw_target, f.method) {
        return Err(rejected(
            Reply::error(r.status, r.code, r.message).closing(),
        ));
    }
    // Absolute-form targets keep their bytes verbatim in pingora: forward the path routed on.
    let absolute_form = f.raw_target.first() != Some(&b'/');
    let path = normalize_path(f.path)
        .map_err(|e| rejected(Reply::error(400, "bad_path", e.to_string())))?;
    let method = http::Method::from_bytes(f.method.as_bytes()).unwrap_or(http::Method::GET);
    if let Some(asked) = gate::preflight_method(&method, f.headers) {
        if let Some(route) = routes.find(f.host, asked, &path).filter(|r| !r.is_free()) {
            let methods = route
                .config
                .methods
                .as_ref()
                .map_or_else(|| asked.to_string(), |m| m.join(", "));
            let requested = f
                .headers
                .get(http::header::ACCESS_CONTROL_REQUEST_HEADERS)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            return Err(rejected(Reply::new(Body::Preflight { methods, requested })));
        }
    }
    let Some(route) = routes.find(f.host, f.method, &path).cloned() else {
        let msg = format!("no route for {} {path}", f.method);
        return Err((Reply::error(404, "no_route", msg), "no_route"));
    };
    let upgrade = gate::check_upgrade(f.headers, !route.is_free(), route.config.allow_upgrade)
        .map_err(|r| rejected(Reply::error(r.status, r.code, r.message).closing()))?;
    let rewritten_path = match path {
        Cow::Owned(p) => Some(p),
        Cow::Borrowed(p) if absolute_form => Some(p.to_string()),
        Cow::Borrowed(_) => None,
    };
    Ok(Routed {
        route,
        rewritten_path,
        upgrade,
    })
}

/// The tenant's standing before any payment is asked for: never take money we will not serve.
/// `Err` carries the reply and the refusal fact for the metrics.
pub fn check_standing(
    standing: &TenantState,
    offers: &Offers,
) -> Result<(), (Reply, Option<&'static str>)> {
    if !standing.active {
        let msg = "this API's account is suspended";
        return Err((
            Reply::error(403, "tenant_suspended", msg),
            Some("tenant_suspended"),
        ));
    }
    if !standing.has_quota() {
        return Err((quota_reply(standing), Some("tenant_quota_exceeded")));
    }
    if offers.offers.is_empty() {
        let msg = "this route cannot be paid on any network its provider's plan allows";
        return Err((Reply::error(403, "no_payable_network", msg), None));
    }
    Ok(())
}

/// The answer to a request over a rate limit.
pub fn rate_limited(limited: crate::ratelimit::Limited) -> Reply {
    Reply::new(Body::RateLimited {
        retry_after: limited.retry_after,
    })
}

fn quota_reply(standing: &TenantState) -> Reply {
    Reply::new(Body::QuotaExceeded {
        period: standing.period.clone(),
        limit: standing.limit(),
    })
}

/// The outcome of a request's payment header, before anything is verified.
pub enum Presented<'a> {
    Paid {
        offer: &'a Offer,
        proof: PaymentProof,
    },
    /// The reply, and whether it counts as an invalid payment (rate-limited per client).
    Refused { reply: Reply, invalid: bool },
}

/// A 402 for `offers` saying why.
pub fn challenge(offers: &Offers, resource_url: &str, error: &str) -> Reply {
    Reply::new(Body::Challenge(offers.challenge(resource_url, error)))
}

/// What the payment header amounts to: a proof to verify, or the challenge.
pub fn presented<'a>(
    check: PaymentCheck<'a>,
    offers: &Offers,
    resource_url: &str,
) -> Presented<'a> {
    match check {
        PaymentCheck::Missing => Presented::Refused {
            reply: challenge(offers, resource_url, "Payment required"),
            invalid: false,
        },
        PaymentCheck::Rejected(r) => Presented::Refused {
            reply: challenge(offers, resource_url, &r.error_text()),
            invalid: true,
        },
        PaymentCheck::Matched { offer, proof, .. } => Presented::Paid { offer, proof },
    }
}

/// An admission's answer: the payment state to forward with, or the reply with the metrics fact
/// and whether it counts as an invalid payment.
pub fn admitted(
    admission: Admission,
    offers: &Offers,
    resource_url: &str,
    standing: &TenantState,
) -> Result<PaymentState, (Reply, &'static str, bool)> {
    match admission {
        Admission::Admitted(state) => Ok(*state),
        Admission::Rejected(r) => {
            let fact = if r.reason == Reason::DuplicateSettlement {
                "duplicate"
            } else {
                "invalid"
            };
            Err((challenge(offers, resource_url, &r.error_text()), fact, true))
        }
        Admission::QuotaExceeded => Err((quota_reply(standing), "quota_exceeded", false)),
        Admission::Unavailable(msg) => {
            tracing::warn!("payment verification unavailable: {msg}");
            let reply = Reply::new(Body::Unavailable(
                "payment verification is temporarily unavailable",
            ));
            Err((reply, "unavailable", false))
        }
    }
}

/// What a settlement's outcome means for the answer: `Ok(receipt)` to attach to the origin's
/// answer (or to forward with), or the reply that replaces it. One mapping for every policy.
pub fn settled(
    outcome: SettleOutcome,
    offers: Option<&Offers>,
    resource_url: &str,
    receipt_header: &'static str,
) -> Result<Receipt, Reply> {
    match outcome {
        SettleOutcome::Settled(receipt) => Ok((receipt_header, receipt)),
        SettleOutcome::Refused(receipt) => {
            let error = receipt.error_reason.clone().unwrap_or_default();
            let reply = match offers {
                Some(o) => challenge(o, resource_url, &error),
                None => Reply::error(402, "settlement_failed", error),
            };
            Err(reply.with_receipt(Some((receipt_header, receipt))))
        }
        SettleOutcome::Unavailable(msg) => {
            tracing::warn!("settlement unavailable: {msg}");
            Err(Reply::new(Body::Unavailable(
                "settlement is temporarily unavailable",
            )))
        }
        SettleOutcome::Pending(receipt) => Err(Reply::new(Body::Unavailable(
            "the settlement was sent but is not confirmed yet",
        ))
        .with_receipt(Some((receipt_header, receipt)))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn table() -> RouteTable {
        let text = r#"
[networks."eip155:84532"]
rpc_url = "http://127.0.0.1:8545"
settler_key = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
assets = [{ symbol = "USDC", address = "0x036cbd53842c5426634e7929541ec2318f3dcf7e", decimals = 6, eip712_name = "USDC", eip712_version = "2" }]
[[tenants]]
id = "acme"
pay_to = { "eip155:84532" = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C" }
[[routes]]
tenant = "acme"
path = "/paid/*"
methods = ["GET"]
upstream = "http://127.0.0.1:1"
price = "$0.01"
[[routes]]
tenant = "acme"
path = "/*"
upstream = "http://127.0.0.1:1"
price = "free"
"#;
        RouteTable::build(&Config::from_toml(text, &|_| None).unwrap())
    }

    fn facts<'a>(
        target: &'a [u8],
        method: &'a str,
        path: &'a str,
        h: &'a HeaderMap,
    ) -> RequestFacts<'a> {
        RequestFacts {
            raw_target: target,
            method,
            path,
            headers: h,
            host: None,
            max_header_bytes: 1024,
        }
    }

    fn code(r: &Result<Routed, (Reply, RouteFact)>) -> &'static str {
        match r {
            Err((
                Reply {
                    body: Body::Error { code, .. },
                    ..
                },
                _,
            )) => code,
            Err((
                Reply {
                    body: Body::Preflight { .. },
                    ..
                },
                _,
            )) => "preflight",
            Err(_) => "other",
            Ok(_) => "routed",
        }
    }

    #[test]
    fn routing_decisions() {
        let t = table();
        let h = HeaderMap::new();
        let r = route_request(&facts(b"/paid/x", "GET", "/paid/x", &h), &t);
        assert_eq!(code(&r), "routed");
        assert!(!r.as_ref().unwrap().route.is_free());
        assert!(r.unwrap().rewritten_path.is_none());
        // HEAD is GET for matching.
        let r = route_request(&facts(b"/paid/x", "HEAD", "/paid/x", &h), &t).unwrap();
        assert!(!r.route.is_free());
        // The normalized path, and an absolute-form target's path, are what is forwarded.
        let r =
            route_request(&facts(b"/free/../paid/x", "GET", "/free/../paid/x", &h), &t).unwrap();
        assert_eq!(r.rewritten_path.as_deref(), Some("/paid/x"));
        assert!(!r.route.is_free());
        let r = route_request(&facts(b"http://h/paid/x", "GET", "/paid/x", &h), &t).unwrap();
        assert_eq!(r.rewritten_path.as_deref(), Some("/paid/x"));
        // Refusals, each closing the connection where the client cannot be trusted further.
        let r = route_request(&facts(b"paid/x", "GET", "/", &h), &t);
        assert_eq!(code(&r), "bad_request_target");
        assert!(r.unwrap_err().0.close);
        assert_eq!(
            code(&route_request(&facts(b"/paid/x", "get", "/paid/x", &h), &t)),
            "bad_method"
        );
        assert_eq!(
            code(&route_request(
                &facts(b"/paid;a/x", "GET", "/paid;a/x", &h),
                &t
            )),
            "bad_path"
        );
        let mut big = HeaderMap::new();
        big.insert("x-big", "a".repeat(2000).parse().unwrap());
        assert_eq!(
            code(&route_request(&facts(b"/x", "GET", "/x", &big), &t)),
            "request_header_too_large"
        );
        let mut up = HeaderMap::new();
        up.insert(http::header::UPGRADE, "websocket".parse().unwrap());
        assert_eq!(
            code(&route_request(
                &facts(b"/paid/x", "GET", "/paid/x", &up),
                &t
            )),
            "upgrade_refused"
        );
        assert!(
            route_request(&facts(b"/free/x", "GET", "/free/x", &up), &t)
                .unwrap()
                .upgrade
        );
        // A preflight to a priced route is answered here; to a free one it is forwarded.
        let mut pre = HeaderMap::new();
        pre.insert(
            http::header::ACCESS_CONTROL_REQUEST_METHOD,
            "GET".parse().unwrap(),
        );
        assert_eq!(
            code(&route_request(
                &facts(b"/paid/x", "OPTIONS", "/paid/x", &pre),
                &t
            )),
            "preflight"
        );
        assert_eq!(
            code(&route_request(
                &facts(b"/free/x", "OPTIONS", "/free/x", &pre),
                &t
            )),
            "routed"
        );
    }

    #[test]
    fn one_settlement_mapping_for_every_policy() {
        let t = table();
        let offers = t
            .find(None, "GET", "/paid/x")
            .unwrap()
            .offers
            .as_ref()
            .unwrap();
        let receipt = |ok: bool| SettlementResponse {
            success: ok,
            error_reason: (!ok).then(|| "invalid_exact_evm_transaction_failed".to_string()),
            transaction: "0xabc".into(),
            network: "eip155:84532".into(),
            payer: None,
        };
        let ok = settled(
            SettleOutcome::Settled(receipt(true)),
            Some(offers),
            "u",
            "payment-response",
        );
        assert_eq!(ok.unwrap().0, "payment-response");
        let refused = settled(
            SettleOutcome::Refused(receipt(false)),
            Some(offers),
            "u",
            "x-payment-response",
        )
        .unwrap_err();
        assert!(matches!(refused.body, Body::Challenge(_)));
        assert_eq!(refused.receipt.as_ref().unwrap().0, "x-payment-response");
        let down = settled(
            SettleOutcome::Unavailable("rpc".into()),
            Some(offers),
            "u",
            "payment-response",
        )
        .unwrap_err();
        assert!(matches!(down.body, Body::Unavailable(_)) && down.receipt.is_none());
        let pending = settled(
            SettleOutcome::Pending(receipt(false)),
            Some(offers),
            "u",
            "payment-response",
        )
        .unwrap_err();
        assert!(matches!(pending.body, Body::Unavailable(_)) && pending.receipt.is_some());
    }
}
