//! The gateway's decisions as plain functions of request facts, testable without a socket.
//!
//! Nothing here touches a pingora `Session`: `mod.rs` extracts the facts, calls these, and hands
//! the outcome to `respond.rs`.

use http::HeaderMap;

pub use crate::payments::Rejection;

// The payment header's decoding and matching is the payment core's first step, shared with the
// management API's priced endpoints.
pub use crate::payments::{check_payment, payment_header, PaymentCheck};

/// A request the gateway refuses before routing it: the status, a stable code, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub code: &'static str,
    pub message: &'static str,
}

const STANDARD_METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// Checks the request line as the client sent it, before anything is routed on it.
///
/// - The target must be origin-form (`/path?query`) or absolute-form (`http://host/path`): pingora
///   keeps any other target's bytes verbatim for the upstream while routing on `/`, so
///   `GET paid/report` would be matched as a free `/` and forwarded as the priced path. Asterisk
///   and authority form are never proxied.
/// - A method that differs only in case from a standard one (`get`) is refused: methods are
///   case-sensitive (RFC 9110 9.1), yet some origins fold them and would serve `get` as GET while
///   the gateway matched it against no GET route.
pub fn check_request_line(raw_target: &[u8], method: &str) -> Result<(), Refusal> {
    let lower = raw_target
        .get(..8)
        .map(|p| p.to_ascii_lowercase())
        .unwrap_or_default();
    let absolute = lower.starts_with(b"http://") || lower.starts_with(b"https://");
    if raw_target.first() != Some(&b'/') && !absolute {
        return Err(Refusal {
            status: 400,
            code: "bad_request_target",
            message: "the request target must be a path starting with / (or an absolute http URL)",
        });
    }
    if !STANDARD_METHODS.contains(&method)
        && STANDARD_METHODS
            .iter()
            .any(|m| m.eq_ignore_ascii_case(method))
    {
        return Err(Refusal {
            status: 400,
            code: "bad_method",
            message: "HTTP methods are case-sensitive; send the standard method in upper case",
        });
    }
    Ok(())
}

/// Checks a protocol upgrade (`Upgrade` header) against the route it would reach; `Ok(true)` for
/// an upgrade that may pass.
///
/// - `h2c` is refused everywhere: an origin that switches to HTTP/2 cleartext takes requests for
///   any path over that one connection, priced ones included, without the gateway seeing them.
/// - On a priced route an upgrade is refused unless the route allows it; when it does, the `101`
///   is the final answer and is charged like a 2xx (a tunnel is never free, and never reusable).
pub fn check_upgrade(
    headers: &HeaderMap,
    priced: bool,
    allow_upgrade: bool,
) -> Result<bool, Refusal> {
    let mut protocols = headers
        .get_all(http::header::UPGRADE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(|p| p.trim_ascii())
        .filter(|p| !p.is_empty())
        .peekable();
    if protocols.peek().is_none() {
        return Ok(false);
    }
    if protocols.any(|p| p.len() >= 3 && p[..3].eq_ignore_ascii_case(b"h2c")) {
        return Err(Refusal {
            status: 400,
            code: "upgrade_refused",
            message: "h2c upgrades are not accepted",
        });
    }
    if priced && !allow_upgrade {
        return Err(Refusal {
            status: 400,
            code: "upgrade_refused",
            message: "this priced route does not accept protocol upgrades",
        });
    }
    Ok(true)
}

/// Size of the request header block as a client sent it (names, values, separators).
pub fn header_block_size(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum()
}

/// `resource.url` for a challenge: the configured public base, or the request's `Host` with the
/// scheme the client used (`https` when it came over TLS).
pub fn resource_url(
    public_url: Option<&str>,
    tls: bool,
    host: Option<&str>,
    path_and_query: &str,
) -> String {
    let scheme = if tls { "https://" } else { "http://" };
    // Joined by hand: `format!` cost a 402 more than the rest of its standing check.
    let parts: [&str; 3] = match (public_url, host) {
        (Some(base), _) => [base, "", path_and_query],
        (None, Some(host)) => [scheme, host, path_and_query],
        (None, None) => [scheme, "localhost", path_and_query],
    };
    let mut url = String::with_capacity(parts.iter().map(|p| p.len()).sum());
    parts.iter().for_each(|p| url.push_str(p));
    url
}

/// A CORS preflight: OPTIONS with `Access-Control-Request-Method`.
pub fn preflight_method<'h>(method: &http::Method, headers: &'h HeaderMap) -> Option<&'h str> {
    if method != http::Method::OPTIONS {
        return None;
    }
    headers
        .get(http::header::ACCESS_CONTROL_REQUEST_METHOD)
        .and_then(|v| v.to_str().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::routes::RouteTable;
    use crate::x402::Reason;
    use base64::Engine;
    use serde_json::json;

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
path = "/paid"
upstream = "http://127.0.0.1:1"
price = "$0.01"
"#;
        RouteTable::build(&Config::from_toml(text, &|_| None).unwrap())
    }

    fn header(v: serde_json::Value) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .encode(v.to_string())
            .into_bytes()
    }

    #[test]
    fn decisions_for_each_kind_of_header() {
        let t = table();
        let route = t.find(None, "GET", "/paid").unwrap();
        let offers = route.offers.as_ref().unwrap();
        let accepted = serde_json::to_value(&offers.offers[0].requirement).unwrap();
        assert_eq!(
            accepted["asset"],
            "0x036CbD53842c5426634e7929541eC2318f3dCF7e"
        );

        assert!(matches!(
            check_payment(offers, None, 8192),
            PaymentCheck::Missing
        ));

        let reject =
            |h: &[u8], max| match check_payment(offers, Some(("payment-signature", h)), max) {
                PaymentCheck::Rejected(r) => r.reason,
                other => panic!("{other:?}"),
            };
        assert_eq!(reject(b"%%%", 8192), Reason::InvalidPayload);
        assert_eq!(reject(&[b'A'; 9000], 8192), Reason::PayloadTooLarge);
        assert_eq!(
            reject(&header(json!({"x402Version": 7})), 8192),
            Reason::InvalidX402Version
        );

        let mut wrong = accepted.clone();
        wrong["amount"] = json!("1");
        let proof =
            |acc: &serde_json::Value| json!({"x402Version": 2, "accepted": acc, "payload": {}});
        assert_eq!(
            reject(&header(proof(&wrong)), 8192),
            Reason::NoMatchingRequirements
        );
        let mut upto = accepted.clone();
        upto["scheme"] = json!("upto");
        assert_eq!(
            reject(&header(proof(&upto)), 8192),
            Reason::UnsupportedScheme
        );

        // A lower-cased echo of our addresses still matches.
        let mut lower = accepted.clone();
        lower["payTo"] = json!(accepted["payTo"].as_str().unwrap().to_lowercase());
        assert!(matches!(
            check_payment(
                offers,
                Some(("payment-signature", &header(proof(&lower)))),
                8192
            ),
            PaymentCheck::Matched { .. }
        ));
        // v1 matches on scheme and network name.
        let v1 =
            json!({"x402Version": 1, "scheme": "exact", "network": "base-sepolia", "payload": {}});
        assert!(matches!(
            check_payment(offers, Some(("x-payment", &header(v1))), 8192),
            PaymentCheck::Matched {
                header: "x-payment",
                ..
            }
        ));
        let v1_other =
            json!({"x402Version": 1, "scheme": "exact", "network": "base", "payload": {}});
        assert_eq!(
            reject(&header(v1_other), 8192),
            Reason::NoMatchingRequirements
        );
    }

    #[test]
    fn challenge_is_byte_stable_and_lists_v1_names_only() {
        let t = table();
        let offers = t
            .find(None, "GET", "/paid")
            .unwrap()
            .offers
            .as_ref()
            .unwrap();
        let a = offers.challenge("https://x/paid", "Payment required");
        let b = offers.challenge("https://x/paid", "Payment required");
        assert_eq!(a.header, b.header);
        let body: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
        assert_eq!(body["x402Version"], 1);
        assert_eq!(body["accepts"][0]["network"], "base-sepolia");
        assert_eq!(body["accepts"][0]["maxAmountRequired"], "10000");
        // Absent, not null: v1 clients refuse `"outputSchema": null`.
        assert!(body["accepts"][0].get("outputSchema").is_none());
    }

    #[test]
    fn request_lines() {
        assert!(check_request_line(b"/paid/report", "GET").is_ok());
        assert!(check_request_line(b"http://h/paid", "GET").is_ok());
        assert!(check_request_line(b"HTTPS://h/paid", "POST").is_ok());
        assert!(check_request_line(b"/x", "PROPFIND").is_ok());
        let code = |t: &[u8], m| check_request_line(t, m).unwrap_err().code;
        assert_eq!(code(b"paid/report", "GET"), "bad_request_target");
        assert_eq!(code(b"*", "OPTIONS"), "bad_request_target");
        assert_eq!(code(b"h:443", "CONNECT"), "bad_request_target");
        assert_eq!(code(b"", "GET"), "bad_request_target");
        assert_eq!(code(b"/paid", "get"), "bad_method");
        assert_eq!(code(b"/paid", "Post"), "bad_method");
    }

    #[test]
    fn upgrades() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(http::header::UPGRADE, v.parse().unwrap());
            m
        };
        assert_eq!(check_upgrade(&HeaderMap::new(), true, false), Ok(false));
        assert_eq!(check_upgrade(&h("websocket"), false, false), Ok(true));
        assert_eq!(check_upgrade(&h("websocket"), true, true), Ok(true));
        assert!(check_upgrade(&h("websocket"), true, false).is_err());
        assert!(check_upgrade(&h("h2c"), false, true).is_err());
        assert!(check_upgrade(&h("foo, H2C"), false, false).is_err());
    }

    #[test]
    fn resource_urls() {
        assert_eq!(
            resource_url(Some("https://api.x"), false, Some("h"), "/a?b=1"),
            "https://api.x/a?b=1"
        );
        assert_eq!(
            resource_url(None, false, Some("h:8080"), "/a"),
            "http://h:8080/a"
        );
        assert_eq!(
            resource_url(None, true, Some("api.x"), "/a"),
            "https://api.x/a"
        );
    }
}
