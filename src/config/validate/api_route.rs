//! One route written through the management API, validated by the very code that validates the
//! file's `[[routes]]`: the same rules, the same messages, each error with its field (`price`,
//! `methods[1]`) instead of the file's key path.

use super::*;

/// Validates `spec` (a `[[routes]]` entry as JSON) as the route `id` of `tenant` under `config`.
/// `index` is its position in the route table, for labels. Unknown fields are errors, as they
/// are in the file.
pub fn api_route(
    id: &str,
    spec: &serde_json::Value,
    config: &Config,
    tenant: &TenantConfig,
    index: usize,
) -> Result<RouteConfig, Vec<ConfigError>> {
    let mut unknown = Vec::new();
    let mut on_unknown = |path: serde_ignored::Path| unknown.push(path.to_string());
    let de = serde_ignored::Deserializer::new(spec, &mut on_unknown);
    let raw: Result<RawRoute, _> = serde_path_to_error::deserialize(de);
    let mut raw = match raw {
        Ok(r) => r,
        Err(err) => {
            let field = err.path().to_string();
            return Err(vec![ConfigError::new(
                if field == "." { String::new() } else { field },
                err.into_inner().to_string(),
            )]);
        }
    };
    if !unknown.is_empty() {
        return Err(unknown
            .into_iter()
            .map(|f| ConfigError::new(f, "is not a route field"))
            .collect());
    }
    if raw.tenant.as_deref().is_some_and(|t| t != tenant.id) {
        return Err(vec![ConfigError::new(
            "tenant",
            format!(
                "is `{}`: a route belongs to the tenant it is written for",
                tenant.id
            ),
        )]);
    }
    raw.tenant = Some(tenant.id.clone());
    let mut e = Errors(Vec::new());
    let mut out = routes::routes(
        vec![raw],
        &config.networks,
        &config.tiers,
        std::slice::from_ref(tenant),
        &mut e,
    );
    if !e.0.is_empty() {
        return Err(e
            .0
            .into_iter()
            .map(|err| {
                let field = err
                    .path
                    .strip_prefix("routes[0]")
                    .map(|f| f.trim_start_matches('.').to_string())
                    .unwrap_or(err.path);
                ConfigError::new(field, err.message)
            })
            .collect());
    }
    let mut route = out.pop().expect("one valid route in, one out");
    route.index = index;
    route.api_id = Some(id.to_string());
    Ok(route)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::from_toml(
            r#"
[networks."eip155:84532"]
rpc_url = "http://127.0.0.1:8545"
settler_key = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
assets = [{ symbol = "USDC", address = "0x036CbD53842c5426634e7929541eC2318f3dCF7e", decimals = 6, eip712_name = "USDC", eip712_version = "2" }]
"#,
            &|_| None,
        )
        .unwrap()
    }

    fn tenant() -> TenantConfig {
        TenantConfig {
            id: "acme".into(),
            name: "Acme".into(),
            email: None,
            tier: "free".into(),
            pay_to: [(
                "eip155:84532".parse().unwrap(),
                "0x209693Bc6afc0C5328bA36FaF03C514EF312287C".into(),
            )]
            .into_iter()
            .collect(),
        }
    }

    #[test]
    fn a_valid_route_is_what_the_file_would_make() {
        let spec = serde_json::json!({"path": "/v1/*", "upstream": "https://api.example.com", "price": "$0.01", "methods": ["get"]});
        let r = api_route("r_1", &spec, &config(), &tenant(), 7).unwrap();
        assert_eq!(r.tenant, "acme");
        assert_eq!(r.index, 7);
        assert_eq!(r.api_id.as_deref(), Some("r_1"));
        assert_eq!(r.path, PathPattern::Prefix("/v1".into()));
        assert_eq!(r.methods, Some(vec!["GET".into(), "HEAD".into()]));
        assert_eq!(r.networks.len(), 1);
    }

    #[test]
    fn every_error_comes_with_its_field() {
        let spec = serde_json::json!({"path": "v1", "upstream": "ftp://x", "price": "ten", "methods": ["GET", "NO PE"]});
        let errors = api_route("r_1", &spec, &config(), &tenant(), 0).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        for f in ["path", "upstream", "price", "methods[1]"] {
            assert!(fields.contains(&f), "{f} in {fields:?}");
        }
        let errors = api_route(
            "r_1",
            &serde_json::json!({"path": "/x", "colour": "red"}),
            &config(),
            &tenant(),
            0,
        )
        .unwrap_err();
        assert_eq!(errors[0].path, "colour");
        let errors = api_route(
            "r_1",
            &serde_json::json!({"path": 5}),
            &config(),
            &tenant(),
            0,
        )
        .unwrap_err();
        assert_eq!(errors[0].path, "path");
        let errors = api_route(
            "r_1",
            &serde_json::json!({"tenant": "other", "path": "/x"}),
            &config(),
            &tenant(),
            0,
        )
        .unwrap_err();
        assert_eq!(errors[0].path, "tenant");
    }
}
