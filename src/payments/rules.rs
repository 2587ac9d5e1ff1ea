//! The charging rules, as plain functions of a request's facts.

use crate::x402::{self, PaymentProof};

/// Whether a status is an interim answer (1xx other than 101): never the origin's final word.
pub fn is_interim(status: u16) -> bool {
    (100..200).contains(&status) && status != 101
}

/// Whether a final origin status is one the route charges for: its `charge_statuses`, and a
/// `101 Switching Protocols` on a route that allows upgrades (the tunnel is what was paid for).
pub fn is_charged(route: &crate::config::RouteConfig, status: u16) -> bool {
    if status == 101 {
        return route.allow_upgrade;
    }
    !is_interim(status) && route.charged.charges(status)
}

/// What becomes of a claimed payment whose request ended without a final answer from the origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unanswered {
    /// The origin has the request and the client left: charged as if the origin had answered
    /// with a charged status, since we cannot know its answer and it may have acted on it.
    Charge,
    /// The origin never got the request, or failed (unreachable, reset, timed out): not charged.
    Release,
}

/// Decides `Unanswered` from whether the request reached the origin and whether the request
/// ended because the client went away (rather than the origin failing).
pub fn unanswered(forwarded: bool, client_left: bool) -> Unanswered {
    if forwarded && client_left {
        Unanswered::Charge
    } else {
        Unanswered::Release
    }
}

/// The receipt header for a proof's version.
pub fn receipt_header_for(proof: &PaymentProof) -> &'static str {
    match proof {
        PaymentProof::V1(_) => x402::X_PAYMENT_RESPONSE,
        PaymentProof::V2(_) => x402::PAYMENT_RESPONSE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ChargedStatuses, Config};

    fn route(extra: &str) -> crate::config::RouteConfig {
        let text = format!(
            r#"
[networks."eip155:84532"]
rpc_url = "http://127.0.0.1:8545"
settler_key = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
assets = [{{ symbol = "USDC", address = "0x036cbd53842c5426634e7929541ec2318f3dcf7e", decimals = 6, eip712_name = "USDC", eip712_version = "2" }}]
[[tenants]]
id = "acme"
pay_to = {{ "eip155:84532" = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C" }}
[[routes]]
tenant = "acme"
path = "/paid"
upstream = "http://127.0.0.1:1"
price = "$0.01"
{extra}
"#
        );
        Config::from_toml(&text, &|_| None).unwrap().routes[0].clone()
    }

    #[test]
    fn charged_statuses() {
        let r = route("");
        assert_eq!(r.charged, ChargedStatuses::default());
        for (status, charged) in [(200, true), (204, true), (302, true), (304, true)] {
            assert_eq!(is_charged(&r, status), charged, "{status}");
        }
        for status in [100, 101, 103, 400, 404, 500, 503] {
            assert!(!is_charged(&r, status), "{status}");
        }
        let r = route(
            r#"charge_statuses = ["2xx", "404"]
allow_upgrade = true"#,
        );
        assert!(is_charged(&r, 404) && is_charged(&r, 201) && is_charged(&r, 101));
        assert!(!is_charged(&r, 302) && !is_charged(&r, 100));
        assert!(is_interim(100) && is_interim(103) && !is_interim(101) && !is_interim(200));
    }

    #[test]
    fn unanswered_requests() {
        assert_eq!(unanswered(true, true), Unanswered::Charge);
        assert_eq!(unanswered(true, false), Unanswered::Release);
        assert_eq!(unanswered(false, true), Unanswered::Release);
        assert_eq!(unanswered(false, false), Unanswered::Release);
    }
}
