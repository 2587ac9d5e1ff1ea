//! The config loader: `Config::from_toml` on any text (no environment), then what is built from
//! an accepted config at start and at every reload: the route table and every priced route's 402.
//!
//! Properties: `Ok` or `Err`, never a panic; every error names what is wrong; an accepted config
//! builds a table whose challenges are well-formed x402 (the v2 header decodes to a
//! `PaymentRequired` listing exactly the route's offers, the v1 body to a `PaymentRequiredV1`),
//! whatever a route's description or mime type holds.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use x402_gate::config::Config;
use x402_gate::routes::RouteTable;
use x402_gate::x402::{PaymentRequired, PaymentRequiredV1};

pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let config = match Config::from_toml(text, &|_| None) {
        Ok(config) => config,
        Err(errors) => {
            assert!(!errors.0.is_empty(), "an Err without an error");
            for e in &errors.0 {
                assert!(
                    !e.message.is_empty(),
                    "an error without a message at {:?}",
                    e.path
                );
            }
            return;
        }
    };
    let table = RouteTable::build(&config);
    assert_eq!(table.len(), config.routes.len());
    for route in table.routes() {
        let Some(offers) = &route.offers else {
            continue;
        };
        let challenge = offers.challenge("https://gw.example/x?q=\"1\"", "Payment required");
        let json = STANDARD
            .decode(&challenge.header)
            .expect("the challenge header is base64");
        let v2: PaymentRequired =
            serde_json::from_slice(&json).expect("the challenge header is a PaymentRequired");
        assert_eq!(v2.x402_version, 2);
        assert_eq!(v2.accepts.len(), offers.offers.len());
        for (wire, offer) in v2.accepts.iter().zip(&offers.offers) {
            assert_eq!(wire, &offer.requirement);
            assert_eq!(wire.amount, offer.amount.to_string());
        }
        let v1: PaymentRequiredV1 =
            serde_json::from_slice(&challenge.body).expect("the v1 body is a PaymentRequiredV1");
        assert_eq!(v1.x402_version, 1);
        assert!(v1.accepts.len() <= offers.offers.len());
    }
}
