//! Prices -> payment requirements. For each priced route, the `accepts[]` entries are computed once
//! at config load and kept byte-stable, because a v2 client echoes the entry it chose and we match
//! that echo against ours on retry: anything per-request in them would break every retry.
//! May import: config, x402.

use serde::Serialize;
use serde_json::json;
use serde_json::value::RawValue;

use std::collections::BTreeMap;

use crate::config::{AssetConfig, Config, NetworkSigner, Price, RouteConfig, SettlePolicy, Tier};
use crate::x402::{
    encode_header, AtomicAmount, Namespace, Network, PaymentPayloadV1, PaymentProof,
    PaymentRequirements, PaymentRequirementsV1, ResourceInfo,
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

/// All the offers of a priced route, plus the pre-serialized `accepts` array.
#[derive(Debug)]
pub struct Offers {
    pub offers: Vec<Offer>,
    pub description: String,
    pub mime_type: String,
    pub settle: SettlePolicy,
    accepts_v2: Box<RawValue>,
}

/// A 402 ready to write: the `PAYMENT-REQUIRED` header value and the v1 JSON body.
#[derive(Debug, Clone)]
pub struct Challenge {
    pub header: String,
    pub body: Vec<u8>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PaymentRequiredOut<'a> {
    x402_version: u8,
    error: &'a str,
    resource: ResourceInfo,
    accepts: &'a RawValue,
    extensions: serde_json::Map<String, serde_json::Value>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PaymentRequiredV1Out<'a> {
    x402_version: u8,
    error: &'a str,
    accepts: Vec<PaymentRequirementsV1>,
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
        let accepts_v2 = serde_json::value::to_raw_value(&accepts).expect("requirements serialize");
        Some(Offers {
            offers,
            description: route.description.clone(),
            mime_type: route.mime_type.clone(),
            settle: route.settle,
            accepts_v2,
        })
    }

    /// Builds the 402 for `resource_url`, with `error` as the human-readable reason.
    pub fn challenge(&self, resource_url: &str, error: &str) -> Challenge {
        let resource = ResourceInfo {
            url: resource_url.to_string(),
            description: Some(self.description.clone()),
            mime_type: Some(self.mime_type.clone()),
        };
        let header = encode_header(&PaymentRequiredOut {
            x402_version: 2,
            error,
            resource,
            accepts: &self.accepts_v2,
            extensions: Default::default(),
        });
        // v1 clients validate every entry's network against a fixed enum: list only networks
        // that have a v1 name, or the whole body becomes unparsable for them.
        let accepts = self
            .offers
            .iter()
            .filter_map(|o| {
                let name = o.network.v1_name()?;
                Some(PaymentRequirementsV1 {
                    scheme: "exact".into(),
                    network: name.into(),
                    max_amount_required: o.amount.to_string(),
                    resource: resource_url.to_string(),
                    description: self.description.clone(),
                    mime_type: self.mime_type.clone(),
                    output_schema: None,
                    pay_to: o.pay_to.clone(),
                    max_timeout_seconds: o.requirement.max_timeout_seconds,
                    asset: o.asset.address.clone(),
                    extra: o.requirement.extra.clone(),
                })
            })
            .collect();
        let body = serde_json::to_vec(&PaymentRequiredV1Out {
            x402_version: 1,
            error,
            accepts,
        })
        .expect("v1 body serializes");
        Challenge { header, body }
    }

    /// The offer a proof pays for. v2: the echoed `accepted` must equal one of ours (addresses
    /// compared case-insensitively on EVM, since clients may lower-case them). v1: scheme and
    /// network, first asset on that network.
    pub fn match_proof(&self, proof: &PaymentProof) -> Option<&Offer> {
        match proof {
            PaymentProof::V2(p) => self
                .offers
                .iter()
                .find(|o| requirement_eq(&o.requirement, &p.accepted, o.network.namespace())),
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
    let addr_eq = |a: &str, b: &str| match ns {
        Namespace::Eip155 => a.eq_ignore_ascii_case(b),
        Namespace::Solana => a == b,
    };
    ours.scheme == theirs.scheme
        && ours.network == theirs.network
        && ours.amount == theirs.amount
        && addr_eq(&ours.asset, &theirs.asset)
        && addr_eq(&ours.pay_to, &theirs.pay_to)
        && ours.max_timeout_seconds == theirs.max_timeout_seconds
        && ours.extra == theirs.extra
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
