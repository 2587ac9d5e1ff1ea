//! Plans paid with x402: each tier sold in `[billing.x402]` as the offers of a priced route whose
//! payee is the operator. The offers are built by `pricing` exactly as a route's are (byte-stable
//! `accepts[]`, the same challenge), so a client pays an upgrade as it pays any route.

use std::collections::BTreeMap;

use crate::config::{
    ChargedStatuses, Config, PathPattern, Price, RouteConfig, SettlePolicy, Tier, Upstream,
    X402PlansConfig,
};
use crate::pricing::{Offers, TenantTerms};

/// The path of the priced management endpoint (its challenges' `resource.url` ends with it).
pub const UPGRADE_PATH: &str = "/api/v1/x402/billing/upgrade";

/// The ledger's tenant for plan payments: they are the operator's revenue, never a tenant's, and
/// never count toward a tenant's monthly payments. Not a valid tenant id (`@`), so no tenant can
/// ever be named so.
pub const OPERATOR_LEDGER: &str = "@operator";

/// The offers of every tier sold for x402, built once at start.
pub struct PlanOffers {
    pub config: X402PlansConfig,
    by_tier: BTreeMap<String, Offers>,
}

impl PlanOffers {
    pub fn new(config: &Config, plans: &X402PlansConfig) -> PlanOffers {
        let terms = TenantTerms {
            tier: Some(Tier {
                name: "billing".into(),
                monthly_verifications: None,
                networks: vec![plans.network.to_string()],
            }),
            pay_to: [(plans.network.clone(), plans.pay_to.clone())].into(),
        };
        let by_tier = plans
            .prices
            .iter()
            .filter_map(|(tier, price)| {
                let route = plan_route(plans, tier, price);
                Offers::for_route(&route, config, &terms).map(|o| (tier.clone(), o))
            })
            .collect();
        PlanOffers {
            config: plans.clone(),
            by_tier,
        }
    }

    /// The offers for `tier`, if it is sold for x402.
    pub fn offers(&self, tier: &str) -> Option<&Offers> {
        self.by_tier.get(tier).filter(|o| !o.offers.is_empty())
    }

    pub fn tiers(&self) -> impl Iterator<Item = &str> {
        self.by_tier.keys().map(String::as_str)
    }
}

/// A route-shaped description of one plan's price, so `pricing` builds its offers; it is never
/// in the route table and never proxied.
fn plan_route(plans: &X402PlansConfig, tier: &str, price: &str) -> RouteConfig {
    RouteConfig {
        api_id: None,
        index: usize::MAX,
        tenant: OPERATOR_LEDGER.into(),
        host: None,
        path: PathPattern::Exact(UPGRADE_PATH.into()),
        methods: Some(vec!["POST".into()]),
        upstream: Upstream {
            tls: false,
            host: "127.0.0.1".into(),
            port: 1,
        },
        price: Price::Usd(price.to_string()),
        networks: vec![plans.network.clone()],
        networks_listed: Some(vec![plans.network.clone()]),
        description: format!(
            "The `{tier}` plan for {} days",
            plans.period.as_secs() / 86_400
        ),
        mime_type: "application/json".into(),
        // Settled before the tier changes: the plan is only ever granted for money that moved.
        settle: SettlePolicy::Before,
        max_timeout_seconds: plans.max_timeout_seconds,
        charged: ChargedStatuses::default(),
        case_insensitive: false,
        allow_upgrade: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_tier_is_offered_at_its_price_to_the_operator() {
        let text = r#"
[networks."eip155:84532"]
rpc_url = "http://127.0.0.1:8545"
settler_key = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
assets = [{ symbol = "USDC", address = "0x036CbD53842c5426634e7929541eC2318f3dCF7e", decimals = 6, eip712_name = "USDC", eip712_version = "2" }]
[billing.x402]
network = "eip155:84532"
pay_to = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"
prices = { starter = "$99", pro = "$299" }
"#;
        let config = Config::from_toml(text, &|_| None).unwrap();
        let plans = PlanOffers::new(&config, config.billing.x402.as_ref().unwrap());
        assert_eq!(plans.tiers().collect::<Vec<_>>(), ["pro", "starter"]);
        let pro = &plans.offers("pro").unwrap().offers[0];
        assert_eq!(pro.requirement.amount, "299000000");
        assert_eq!(
            pro.requirement.pay_to,
            "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"
        );
        assert!(plans.offers("enterprise").is_none());
    }
}
