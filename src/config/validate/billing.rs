//! `[billing]`: Stripe (webhook secrets, API key and base, tolerance, URLs, the price table) and
//! plans paid with x402 (network, the operator's pay_to, a USD price per tier).

use super::*;

const DEFAULT_STRIPE_API_BASE: &str = "https://api.stripe.com";
/// Stripe's own libraries default to five minutes.
const DEFAULT_TOLERANCE_SECONDS: u64 = 300;
/// A tolerance longer than this makes a captured webhook replayable for too long.
const MAX_TOLERANCE_SECONDS: u64 = 3600;
const DEFAULT_PERIOD_DAYS: u64 = 30;

pub(super) fn billing(
    raw: RawBilling,
    networks: &BTreeMap<Network, NetworkConfig>,
    tiers: &BTreeMap<String, Tier>,
    e: &mut Errors,
) -> BillingConfig {
    BillingConfig {
        stripe: raw.stripe.map(|s| stripe(s, tiers, e)),
        x402: raw.x402.and_then(|x| x402_plans(x, networks, tiers, e)),
    }
}

fn http_url(path: &str, value: &str, e: &mut Errors) -> bool {
    match url::Url::parse(value) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => true,
        _ => {
            e.push(path, format!("`{value}` is not an absolute http(s) URL"));
            false
        }
    }
}

fn known_tier(path: String, tier: &str, tiers: &BTreeMap<String, Tier>, e: &mut Errors) {
    if !tiers.contains_key(tier) {
        let known: Vec<_> = tiers.keys().map(String::as_str).collect();
        e.push(
            path,
            format!("unknown tier `{tier}` (known: {})", known.join(", ")),
        );
    }
}

fn stripe(raw: RawStripe, tiers: &BTreeMap<String, Tier>, e: &mut Errors) -> StripeConfig {
    let secrets = raw.webhook_secrets.unwrap_or_default();
    if secrets.is_empty() {
        e.push(
            "billing.stripe.webhook_secrets",
            "is required: the endpoint's signing secrets (whsec_...), several during a rotation",
        );
    }
    for (i, s) in secrets.iter().enumerate() {
        if s.is_empty() {
            e.push(format!("billing.stripe.webhook_secrets[{i}]"), "is empty");
        }
    }
    let api_base = raw
        .api_base
        .unwrap_or_else(|| DEFAULT_STRIPE_API_BASE.to_string());
    http_url("billing.stripe.api_base", &api_base, e);
    let tolerance = raw.tolerance_seconds.unwrap_or(DEFAULT_TOLERANCE_SECONDS);
    if !(1..=MAX_TOLERANCE_SECONDS).contains(&tolerance) {
        e.push(
            "billing.stripe.tolerance_seconds",
            format!("must be between 1 and {MAX_TOLERANCE_SECONDS}"),
        );
    }
    for (key, value) in [
        ("success_url", &raw.success_url),
        ("cancel_url", &raw.cancel_url),
    ] {
        match value {
            Some(v) => {
                http_url(&format!("billing.stripe.{key}"), v, e);
            }
            // Checkout needs both; without an API key there is no Checkout to send them to.
            None if raw.api_key.is_some() => e.push(
                format!("billing.stripe.{key}"),
                "is required with billing.stripe.api_key (Checkout redirects there)",
            ),
            None => {}
        }
    }
    for (price, tier) in &raw.prices {
        known_tier(
            format!("billing.stripe.prices.{}", key_segment(price)),
            tier,
            tiers,
            e,
        );
    }
    // Checkout sells one price per tier: named in checkout_prices, or the tier's only price.
    let mut checkout_prices = BTreeMap::new();
    for (tier, price) in &raw.checkout_prices {
        let path = format!("billing.stripe.checkout_prices.{}", key_segment(tier));
        known_tier(path.clone(), tier, tiers, e);
        if raw.prices.get(price) != Some(tier) {
            e.push(
                path,
                format!("price `{price}` is not mapped to `{tier}` in billing.stripe.prices"),
            );
        }
        checkout_prices.insert(tier.clone(), price.clone());
    }
    let mut by_tier: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (price, tier) in &raw.prices {
        by_tier.entry(tier).or_default().push(price);
    }
    for (tier, prices) in by_tier {
        if checkout_prices.contains_key(tier) {
            continue;
        }
        match prices.as_slice() {
            [one] => {
                checkout_prices.insert(tier.to_string(), one.to_string());
            }
            _ => e.push(
                format!("billing.stripe.checkout_prices.{}", key_segment(tier)),
                format!(
                    "tier `{tier}` has several prices ({}); name the one Checkout sells",
                    prices.join(", ")
                ),
            ),
        }
    }
    StripeConfig {
        webhook_secrets: secrets.into_iter().map(Secret::new).collect(),
        api_key: raw.api_key.map(Secret::new),
        api_base: api_base.trim_end_matches('/').to_string(),
        tolerance: Duration::from_secs(tolerance.clamp(1, MAX_TOLERANCE_SECONDS)),
        success_url: raw.success_url,
        cancel_url: raw.cancel_url,
        prices: raw.prices,
        checkout_prices,
    }
}

fn x402_plans(
    raw: RawX402Plans,
    networks: &BTreeMap<Network, NetworkConfig>,
    tiers: &BTreeMap<String, Tier>,
    e: &mut Errors,
) -> Option<X402PlansConfig> {
    let before = e.0.len();
    let network = match raw.network.as_deref().map(Network::from_str) {
        None => {
            e.push("billing.x402.network", "is required (a configured network)");
            None
        }
        Some(Err(err)) => {
            e.push("billing.x402.network", err.to_string());
            None
        }
        Some(Ok(n)) if !networks.contains_key(&n) => {
            e.push(
                "billing.x402.network",
                format!("{n} is not configured in [networks]"),
            );
            None
        }
        Some(Ok(n)) => Some(n),
    };
    let pay_to = match (&network, raw.pay_to) {
        (_, None) => {
            e.push(
                "billing.x402.pay_to",
                "is required (the operator's address)",
            );
            None
        }
        (Some(n), Some(addr)) => match parse_address_for(n, &addr) {
            Ok(a) => Some(a),
            Err(msg) => {
                e.push("billing.x402.pay_to", msg);
                None
            }
        },
        (None, Some(_)) => None,
    };
    let period_days = raw.period_days.unwrap_or(DEFAULT_PERIOD_DAYS);
    if !(1..=366).contains(&period_days) {
        e.push("billing.x402.period_days", "must be between 1 and 366");
    }
    let max_timeout_seconds = raw.max_timeout_seconds.unwrap_or(60);
    if max_timeout_seconds < MIN_TIMEOUT_SECONDS {
        e.push(
            "billing.x402.max_timeout_seconds",
            format!("must be at least {MIN_TIMEOUT_SECONDS}"),
        );
    }
    if raw.prices.is_empty() {
        e.push(
            "billing.x402.prices",
            "is required: the tiers sold and their price per period, like { pro = \"$299\" }",
        );
    }
    let decimals: Vec<u8> = network
        .as_ref()
        .and_then(|n| networks.get(n))
        .map(|n| n.assets.iter().map(|a| a.decimals).collect())
        .unwrap_or_default();
    for (tier, price) in &raw.prices {
        let path = format!("billing.x402.prices.{}", key_segment(tier));
        known_tier(path.clone(), tier, tiers, e);
        let parsed = price
            .strip_prefix('$')
            .map(|_| decimals.iter().map(|d| AtomicAmount::from_usd(price, *d)));
        match parsed {
            None => e.push(path, format!("`{price}` is not a USD price like \"$299\"")),
            Some(mut each) => {
                if let Some(Err(err)) = each.find(|r| r.is_err()) {
                    e.push(path, format!("`{price}`: {err}"));
                }
            }
        }
    }
    if e.0.len() > before {
        return None;
    }
    Some(X402PlansConfig {
        network: network?,
        pay_to: pay_to?,
        period: Duration::from_secs(period_days * 86_400),
        max_timeout_seconds,
        prices: raw.prices,
    })
}
