//! Prices -> payment requirements. For each priced route, the `accepts[]` entries are computed once
//! at config load and kept byte-stable, because a v2 client echoes the entry it chose and we match
//! that echo against ours on retry: anything per-request in them would break every retry.
//! May import: config, x402.

use base64::Engine;
use serde_json::json;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::config::{AssetConfig, Config, NetworkSigner, Price, RouteConfig, SettlePolicy, Tier};
use crate::x402::{
    AtomicAmount, Namespace, Network, PaymentPayloadV1, PaymentProof, PaymentRequirements,
    PaymentRequirementsV1,
};

/// One way to pay a route: a network, an asset on it, the recipient and the amount.
#[derive(Debug, Clone)]
pub struct Offer {
    pub network: Network,
    pub asset: AssetConfig,
    pub pay_to: String,
    pub amount: AtomicAmount,
    /// The v2 `accepts[]` entry, exactly as sent.
    pub requirement: PaymentRequirements,
}

/// All the offers of a priced route, plus its challenge pre-serialized into fragments: a 402 only
/// splices the request's URL and the error text into them (the 402 path is the hot one).
#[derive(Debug)]
pub struct Offers {
    pub offers: Vec<Offer>,
    pub description: String,
    pub mime_type: String,
    pub settle: SettlePolicy,
    /// `,"description":…,"mimeType":…}` closing the v2 `resource` object.
    v2_resource_tail: String,
    /// The base64 of the v2 challenge's opening, `{"x402Version":2,"accepts":[…],
    /// "extensions":{}` and spaces to a whole number of 3-byte groups: a challenge encodes only
    /// what follows it (see `challenge`).
    v2_head_b64: String,
    /// Each v1 `accepts` entry split around its `resource` value.
    v1_entries: Vec<(String, String)>,
    /// Offers this route made before a reload changed their price, still accepted from v2 clients
    /// until the deadline (see `superseding`). Never part of a challenge.
    honoured: Vec<(Instant, Offer)>,
}

/// A marker that cannot occur in serialized requirements, used to split them into fragments.
const SPLICE: &str = "\u{0}x402-gate-splice\u{0}";

/// A 402 ready to write: the `PAYMENT-REQUIRED` header value and the v1 JSON body.
#[derive(Debug, Clone)]
pub struct Challenge {
    pub header: String,
    pub body: Vec<u8>,
}

/// A JSON string literal, escaped.
fn json_str(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialize")
}

/// What goes between a JSON string literal's quotes for `s`: `s` itself when nothing in it needs
/// escaping (a challenge's URL and reason, nearly always), else serde_json's escaping. Spares each
/// 402 two allocations and a byte-by-byte escape.
fn json_inner(s: &str) -> Cow<'_, str> {
    // serde_json escapes exactly these: the quote, the backslash and the control characters.
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        return Cow::Borrowed(s);
    }
    let quoted = json_str(s);
    Cow::Owned(quoted[1..quoted.len() - 1].to_owned())
}

/// What a tenant's routes are paid with right now: its tier and payout addresses, from the
/// store when the tenant has been changed at run time, else from the config.
#[derive(Debug, Clone)]
pub struct TenantTerms {
    pub tier: Option<Tier>,
    pub pay_to: BTreeMap<Network, String>,
}

impl TenantTerms {
    /// The terms the config declares for `tenant`.
    pub fn from_config(config: &Config, tenant: &str) -> Option<TenantTerms> {
        let t = config.tenants.iter().find(|t| t.id == tenant)?;
        Some(TenantTerms {
            tier: config.tiers.get(&t.tier).cloned(),
            pay_to: t.pay_to.clone(),
        })
    }
}

/// The networks a priced route is offered on under `terms`: those listed on the route (or every
/// configured network) that the tier allows, the tenant has a pay_to for, and that carry an asset
/// the price can be paid in. Sorted by CAIP-2 id when not listed.
pub fn effective_networks(
    route: &RouteConfig,
    config: &Config,
    terms: &TenantTerms,
) -> Vec<Network> {
    let candidates: Vec<Network> = match &route.networks_listed {
        Some(list) => list.clone(),
        None => config.networks.keys().cloned().collect(),
    };
    candidates
        .into_iter()
        .filter(|n| terms.tier.as_ref().is_some_and(|t| t.allows(n)))
        .filter(|n| terms.pay_to.contains_key(n))
        .filter(|n| {
            config
                .networks
                .get(n)
                .is_some_and(|net| match &route.price {
                    Price::Fixed { asset, .. } => net.assets.iter().any(|a| &a.symbol == asset),
                    _ => !net.assets.is_empty(),
                })
        })
        .collect()
}

impl Offers {
    /// The offers of a route under the tenant's current terms; `None` for a free route.
    pub fn for_route(route: &RouteConfig, config: &Config, terms: &TenantTerms) -> Option<Offers> {
        if route.price == Price::Free {
            return None;
        }
        let offers: Vec<Offer> = effective_networks(route, config, terms)
            .iter()
            .flat_map(|network| offers_on(route, config, terms, network))
            .collect();
        let accepts: Vec<&PaymentRequirements> = offers.iter().map(|o| &o.requirement).collect();
        let accepts_json = serde_json::to_string(&accepts).expect("requirements serialize");
        // The v2 challenge opens with what never changes for the route (x402Version, accepts,
        // extensions), then the request's own resource and error. JSON's field order means
        // nothing to a parser, and base64 encodes each 3-byte group on its own: padded with
        // spaces (insignificant in JSON) to a multiple of 3, the opening is encoded once here,
        // and each 402 encodes only its last couple of hundred bytes, not the whole kilobyte.
        let mut v2_head =
            format!("{{\"x402Version\":2,\"accepts\":{accepts_json},\"extensions\":{{}}");
        while v2_head.len() % 3 != 0 {
            v2_head.push(' ');
        }
        let v2_head_b64 = base64::engine::general_purpose::STANDARD.encode(v2_head);
        let v2_resource_tail = format!(
            ",\"description\":{},\"mimeType\":{}}}",
            json_str(&route.description),
            json_str(&route.mime_type)
        );
        // v1 clients validate every entry's network against a fixed enum: list only networks
        // that have a v1 name, or the whole body becomes unparsable for them.
        let v1_entries = offers
            .iter()
            .filter_map(|o| {
                let name = o.network.v1_name()?;
                let entry = PaymentRequirementsV1 {
                    scheme: "exact".into(),
                    network: name.into(),
                    max_amount_required: o.amount.to_string(),
                    resource: SPLICE.into(),
                    description: route.description.clone(),
                    mime_type: route.mime_type.clone(),
                    output_schema: None,
                    pay_to: o.pay_to.clone(),
                    max_timeout_seconds: o.requirement.max_timeout_seconds,
                    asset: o.asset.address.clone(),
                    extra: o.requirement.extra.clone(),
                };
                let json = serde_json::to_string(&entry).expect("requirements serialize");
                let marker = json_str(SPLICE);
                let (head, tail) = json
                    .split_once(&marker)
                    .expect("the marker is in the entry");
                Some((head.to_string(), tail.to_string()))
            })
            .collect();
        Some(Offers {
            offers,
            description: route.description.clone(),
            mime_type: route.mime_type.clone(),
            settle: route.settle,
            v2_resource_tail,
            v2_head_b64,
            v1_entries,
            honoured: Vec::new(),
        })
    }

    /// These offers, still accepting what `previous` (the same route before a reload or a
    /// tenant change) offered where only the price or `maxTimeoutSeconds` changed: a client
    /// quoted before the change and paying within that quote's `maxTimeoutSeconds` is served at
    /// the price it was quoted, instead of a 402 that breaks its flow. An offer whose network,
    /// asset, recipient or token domain is no longer offered is never honoured: a payout address
    /// changed because it is compromised must stop being paid at once.
    pub fn superseding(mut self, previous: &Offers, now: Instant) -> Offers {
        let fresh = previous.offers.iter().map(|o| {
            let ttl = Duration::from_secs(o.requirement.max_timeout_seconds);
            (now + ttl, o)
        });
        let still = previous
            .honoured
            .iter()
            .filter(|(until, _)| *until > now)
            .map(|(until, o)| (*until, o));
        for (until, old) in fresh.chain(still) {
            let ns = old.network.namespace();
            let current = |o: &&Offer| requirement_eq(&o.requirement, &old.requirement, ns);
            let same_terms = |o: &Offer| {
                o.network == old.network
                    && same_address(&o.requirement.asset, &old.requirement.asset, ns)
                    && same_address(&o.pay_to, &old.pay_to, ns)
                    && o.requirement.extra == old.requirement.extra
            };
            let known = self
                .honoured
                .iter()
                .any(|(_, h)| requirement_eq(&h.requirement, &old.requirement, ns));
            if self.offers.iter().any(|o| current(&o))
                || known
                || !self.offers.iter().any(same_terms)
            {
                continue;
            }
            self.honoured.push((until, old.clone()));
        }
        self
    }

    /// Builds the 402 for `resource_url`, with `error` as the human-readable reason.
    pub fn challenge(&self, resource_url: &str, error: &str) -> Challenge {
        let (url, error) = (json_inner(resource_url), json_inner(error));
        // What follows the opening encoded once in `for_route`.
        let mut rest =
            String::with_capacity(48 + url.len() + error.len() + self.v2_resource_tail.len());
        rest.push_str(",\"resource\":{\"url\":\"");
        rest.push_str(&url);
        rest.push('"');
        rest.push_str(&self.v2_resource_tail);
        rest.push_str(",\"error\":\"");
        rest.push_str(&error);
        rest.push_str("\"}");
        // Encoded in one call into room made for it (`encode_string` goes through a chunked
        // writer, byte by byte).
        let b64 = &base64::engine::general_purpose::STANDARD;
        let encoded = base64::encoded_len(rest.len(), true).expect("a challenge is small");
        let mut header = Vec::with_capacity(self.v2_head_b64.len() + encoded);
        header.extend_from_slice(self.v2_head_b64.as_bytes());
        let start = header.len();
        header.resize(start + encoded, 0);
        b64.encode_slice(rest.as_bytes(), &mut header[start..])
            .expect("room made for it");
        let header = String::from_utf8(header).expect("base64 is ASCII");
        let mut body = String::with_capacity(64 + error.len() + self.v1_entries.len() * 512);
        body.push_str("{\"x402Version\":1,\"error\":\"");
        body.push_str(&error);
        body.push_str("\",\"accepts\":[");
        for (i, (head, tail)) in self.v1_entries.iter().enumerate() {
            if i > 0 {
                body.push(',');
            }
            body.push_str(head);
            body.push('"');
            body.push_str(&url);
            body.push('"');
            body.push_str(tail);
        }
        body.push_str("]}");
        Challenge {
            header,
            body: body.into_bytes(),
        }
    }

    /// The offer a proof pays for. v2: the echoed `accepted` must equal one of ours (addresses
    /// compared case-insensitively on EVM, since clients may lower-case them). v1: scheme and
    /// network, first asset on that network.
    pub fn match_proof(&self, proof: &PaymentProof) -> Option<&Offer> {
        match proof {
            PaymentProof::V2(p) => {
                let eq =
                    |o: &&Offer| requirement_eq(&o.requirement, &p.accepted, o.network.namespace());
                self.offers.iter().find(eq).or_else(|| {
                    let now = Instant::now();
                    self.honoured
                        .iter()
                        .filter(|(until, _)| *until > now)
                        .map(|(_, o)| o)
                        .find(eq)
                })
            }
            PaymentProof::V1(PaymentPayloadV1 {
                scheme, network, ..
            }) => {
                let network = Network::from_v1_name(network)?;
                self.offers
                    .iter()
                    .find(|o| scheme == "exact" && o.network == network)
            }
        }
    }
}

/// Whether a client's echoed requirement is ours (EVM addresses compared case-insensitively).
pub fn requirement_eq(
    ours: &PaymentRequirements,
    theirs: &PaymentRequirements,
    ns: Namespace,
) -> bool {
    let addr_eq = |a: &str, b: &str| same_address(a, b, ns);
    ours.scheme == theirs.scheme
        && ours.network == theirs.network
        && ours.amount == theirs.amount
        && addr_eq(&ours.asset, &theirs.asset)
        && addr_eq(&ours.pay_to, &theirs.pay_to)
        && ours.max_timeout_seconds == theirs.max_timeout_seconds
        && ours.extra == theirs.extra
}

/// Whether two addresses are the same: EVM hex case-insensitively, base58 exactly.
fn same_address(a: &str, b: &str, ns: Namespace) -> bool {
    match ns {
        Namespace::Eip155 => a.eq_ignore_ascii_case(b),
        Namespace::Solana => a == b,
    }
}

fn offers_on(
    route: &RouteConfig,
    config: &Config,
    terms: &TenantTerms,
    network: &Network,
) -> Vec<Offer> {
    let (Some(net), Some(pay_to)) = (config.networks.get(network), terms.pay_to.get(network))
    else {
        return Vec::new();
    };
    net.assets
        .iter()
        .filter_map(|asset| {
            let amount = match &route.price {
                Price::Free => return None,
                Price::Usd(usd) => AtomicAmount::from_usd(usd, asset.decimals).ok()?,
                Price::Fixed { amount, asset: sym } if *sym == asset.symbol => *amount,
                Price::Fixed { .. } => return None,
            };
            let extra = match (&net.signer, &asset.eip712) {
                (_, Some((name, version))) => json!({"name": name, "version": version}),
                (NetworkSigner::Solana { fee_payer, .. }, None) => json!({"feePayer": fee_payer}),
                (NetworkSigner::Evm { .. }, None) => return None,
            };
            Some(Offer {
                network: network.clone(),
                asset: asset.clone(),
                pay_to: pay_to.clone(),
                amount,
                requirement: PaymentRequirements {
                    scheme: "exact".into(),
                    network: network.to_string(),
                    amount: amount.to_string(),
                    asset: asset.address.clone(),
                    pay_to: pay_to.clone(),
                    max_timeout_seconds: route.max_timeout_seconds,
                    extra: Some(extra),
                },
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::x402::{PaymentRequired, PaymentRequiredV1};

    /// Between quotes, `json_inner` is serde_json's literal: for every ASCII character, between
    /// others and alone, and text beyond ASCII (which JSON carries as is).
    #[test]
    fn json_inner_quoted_is_serde_jsons_literal() {
        let mut cases: Vec<String> = (0u8..0x80)
            .flat_map(|b| [format!("a{}b", char::from(b)), char::from(b).to_string()])
            .collect();
        cases.extend(
            [
                "",
                "https://api.x/a?b=1&c=\"d\"",
                "caf\u{e9} \u{2028} \u{1f600}",
                "\\n",
            ]
            .map(String::from),
        );
        for s in cases {
            assert_eq!(format!("\"{}\"", json_inner(&s)), json_str(&s), "{s:?}");
        }
    }

    #[test]
    fn spliced_challenges_are_the_wire_types_exactly() {
        let text = r#"
[networks."eip155:84532"]
rpc_url = "http://127.0.0.1:8545"
settler_key = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
assets = [{ symbol = "USDC", address = "0x036cbd53842c5426634e7929541ec2318f3dcf7e", decimals = 6, eip712_name = "USDC", eip712_version = "2" }]
[networks."eip155:31337"]
rpc_url = "http://127.0.0.1:8545"
settler_key = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
assets = [{ symbol = "USDC", address = "0x5FbDB2315678afecb367f032d93F642f64180aa3", decimals = 6, eip712_name = "USD \"Coin\"", eip712_version = "2" }]
[tiers.free]
networks = ["eip155:84532", "eip155:31337"]
[[tenants]]
id = "acme"
pay_to = { "eip155:84532" = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C", "eip155:31337" = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C" }
[[routes]]
tenant = "acme"
path = "/paid"
upstream = "http://127.0.0.1:1"
price = "$0.01"
description = "Quotes \" and \\ and unicode é"
"#;
        let config = Config::from_toml(text, &|_| None).unwrap();
        let route = &config.routes[0];
        let offers = Offers::for_route(
            route,
            &config,
            &TenantTerms::from_config(&config, "acme").unwrap(),
        )
        .unwrap();
        let url = "https://api.example.com/paid?q=\"x\"&u=é";
        let c = offers.challenge(url, "invalid_payload: \"bad\"\n");
        let v2: PaymentRequired =
            serde_json::from_slice(&crate::x402::codec::decode_base64(&c.header).unwrap()).unwrap();
        assert_eq!(v2.resource.url, url);
        assert_eq!(v2.error.as_deref(), Some("invalid_payload: \"bad\"\n"));
        assert_eq!(
            v2.resource.description.as_deref(),
            Some("Quotes \" and \\ and unicode é")
        );
        assert_eq!(
            v2.accepts,
            offers
                .offers
                .iter()
                .map(|o| o.requirement.clone())
                .collect::<Vec<_>>()
        );
        // The opening is encoded apart (`v2_head_b64`): whatever the length of what follows, the
        // header is one base64 text of one JSON object with every field.
        for url in ["", "/", "/a", "/ab", "/abc", "/abcd"] {
            let c = offers.challenge(url, "Payment required");
            let json: serde_json::Value =
                serde_json::from_slice(&crate::x402::codec::decode_base64(&c.header).unwrap())
                    .unwrap();
            assert_eq!(json["resource"]["url"], url);
            assert_eq!(json["x402Version"], 2);
            assert_eq!(json["error"], "Payment required");
            assert_eq!(json["extensions"], serde_json::json!({}));
            assert_eq!(
                json["accepts"].as_array().unwrap().len(),
                offers.offers.len()
            );
            assert_eq!(json.as_object().unwrap().len(), 5, "{json}");
        }
        let v1: PaymentRequiredV1 = serde_json::from_slice(&c.body).unwrap();
        assert_eq!(v1.accepts.len(), 1, "only the v1-named network");
        assert_eq!(v1.accepts[0].resource, url);
        assert_eq!(v1.accepts[0].network, "base-sepolia");
        // Byte-for-byte what serde writes for the same values.
        assert_eq!(serde_json::to_vec(&v1).unwrap(), c.body);
    }

    fn offers_for(price: &str, pay_to: &str) -> Offers {
        let text = format!(
            r#"
[networks."eip155:84532"]
rpc_url = "http://127.0.0.1:8545"
settler_key = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
assets = [{{ symbol = "USDC", address = "0x036CbD53842c5426634e7929541eC2318f3dCF7e", decimals = 6, eip712_name = "USDC", eip712_version = "2" }}]
[[tenants]]
id = "acme"
pay_to = {{ "eip155:84532" = "{pay_to}" }}
[[routes]]
tenant = "acme"
path = "/paid"
upstream = "http://127.0.0.1:1"
price = "{price}"
"#
        );
        let config = Config::from_toml(&text, &|_| None).unwrap();
        let terms = TenantTerms::from_config(&config, "acme").unwrap();
        Offers::for_route(&config.routes[0], &config, &terms).unwrap()
    }

    fn paying(offer: &Offer) -> PaymentProof {
        PaymentProof::V2(Box::new(crate::x402::PaymentPayload {
            x402_version: 2,
            resource: None,
            accepted: offer.requirement.clone(),
            payload: json!({}),
            extensions: None,
        }))
    }

    const PAY_TO: &str = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C";
    const OTHER_PAY_TO: &str = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";

    #[test]
    fn a_quote_from_before_a_price_change_is_honoured_for_its_timeout() {
        let old = offers_for("$0.01", PAY_TO);
        let quoted = paying(&old.offers[0]);
        let now = Instant::now();
        let new = offers_for("$0.02", PAY_TO).superseding(&old, now);
        let matched = new
            .match_proof(&quoted)
            .expect("the old quote is still payable");
        assert_eq!(matched.amount.to_string(), "10000", "at the price quoted");
        // Never offered again: the challenge lists the new price only.
        let challenge = new.challenge("http://x/paid", "e");
        let v2: crate::x402::PaymentRequired =
            serde_json::from_slice(&crate::x402::codec::decode_base64(&challenge.header).unwrap())
                .unwrap();
        assert_eq!(v2.accepts.len(), 1);
        assert_eq!(v2.accepts[0].amount, "20000");
        // Carried through a further rebuild, with its own deadline.
        let again = offers_for("$0.02", PAY_TO).superseding(&new, now + Duration::from_secs(1));
        assert!(again.match_proof(&quoted).is_some());
        // Past its maxTimeoutSeconds (60 by default) it is refused.
        let stale = offers_for("$0.02", PAY_TO).superseding(&old, now - Duration::from_secs(61));
        assert!(stale.match_proof(&quoted).is_none());
    }

    #[test]
    fn a_quote_to_a_replaced_payout_address_is_never_honoured() {
        let old = offers_for("$0.01", PAY_TO);
        let quoted = paying(&old.offers[0]);
        let new = offers_for("$0.01", OTHER_PAY_TO).superseding(&old, Instant::now());
        assert!(new.match_proof(&quoted).is_none());
    }
}
