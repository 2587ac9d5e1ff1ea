//! Error reporting: panics and error-level log events sent to Sentry when a DSN is configured
//! (`[sentry] dsn`, or `SENTRY_DSN` in the environment), never anywhere otherwise.
//!
//! Every event is scrubbed before it leaves the process ([`Scrubber`]): first every secret the
//! config names is cut out wherever it appears (the admin token, settler and fee-payer keys, RPC,
//! database and Redis URLs and the keys in their paths and queries, the DSN), then each text goes
//! through `x402::redact::scrub`, which removes any URL, `key=value` credential, bearer token and
//! long opaque word (API keys, payment headers). The request, user and breadcrumb data that
//! integrations might attach are dropped or scrubbed the same way; an event that still holds a
//! configured secret after that is not sent at all.
//!
//! Which log events become Sentry events: ERROR lines of the gateway's own targets. ERROR lines of
//! libraries (pingora logs a client's failed TLS handshake at error level) and WARN lines become
//! breadcrumbs, context for the next event; INFO and below (the access line of every request)
//! are ignored, so the paid path pays nothing for reporting.
//!
//! May import: config, cli (the version), x402 (redact). sentry stays here and in `logging`
//! (its tracing layer).

use std::borrow::Cow;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sentry::integrations::tracing::{BreadcrumbLayer, ErrorLayer};
use sentry::protocol::{Context, Event, Value};
use tracing::Subscriber;
use tracing_subscriber::layer::{Context as LayerContext, Layer};
use tracing_subscriber::registry::LookupSpan;

use crate::config::{Config, NetworkSigner, SentryConfig};
use crate::x402::redact::{scrub, SECRET_MARK};

/// The environment variable read when `[sentry] dsn` is not set.
pub const DSN_ENV: &str = "SENTRY_DSN";

/// Secrets shorter than this are not searched for: too likely to match ordinary text, and no
/// credential this gateway takes is that short.
const MIN_SECRET_LEN: usize = 8;

/// The DSN to report to: the config's, else `SENTRY_DSN`; `None`: reporting is off.
pub fn dsn(config: &SentryConfig) -> Option<String> {
    config
        .dsn
        .as_ref()
        .map(|s| s.expose().to_string())
        .or_else(|| std::env::var(DSN_ENV).ok())
        .filter(|d| !d.trim().is_empty())
}

#[derive(Debug, thiserror::Error)]
pub enum ReportingError {
    #[error("the Sentry DSN is not valid ({0}); set [sentry] dsn or SENTRY_DSN to https://KEY@HOST/PROJECT")]
    BadDsn(String),
}

/// Keeps reporting on; dropping it sends what is queued (up to two seconds) and stops.
pub struct ReportingGuard {
    _guard: sentry::ClientInitGuard,
}

impl ReportingGuard {
    /// Sends every queued event now (tests, and before a deliberate exit).
    pub fn flush(&self, timeout: Duration) -> bool {
        sentry::Hub::main()
            .client()
            .is_some_and(|c| c.flush(Some(timeout)))
    }
}

/// Starts reporting to `dsn` with events scrubbed of `config`'s secrets. Call it on the main
/// thread before any other thread starts: sentry binds the client to the process's main hub,
/// which threads copy when they first report.
pub fn init(config: &Config, dsn: &str) -> Result<ReportingGuard, ReportingError> {
    let parsed =
        sentry::types::Dsn::from_str(dsn).map_err(|e| ReportingError::BadDsn(e.to_string()))?;
    let scrubber = Arc::new(Scrubber::from_config(config, dsn));
    let for_crumbs = scrubber.clone();
    let mut options = sentry::ClientOptions::new().sample_rate(config.sentry.sample_rate);
    options.dsn = Some(parsed);
    options.release = Some(Cow::Borrowed(crate::cli::VERSION));
    options.environment = config.sentry.environment.clone().map(Cow::Owned);
    options.send_default_pii = false;
    // Stack traces of panics only (the panic integration attaches them); a log line's stack
    // would be the logging machinery's.
    options.attach_stacktrace = false;
    options.before_send = Some(Arc::new(move |event| scrubber.event(event)));
    options.before_breadcrumb = Some(Arc::new(move |mut crumb: sentry::Breadcrumb| {
        crumb.message = crumb.message.map(|m| for_crumbs.text(&m));
        for v in crumb.data.values_mut() {
            for_crumbs.value(v);
        }
        Some(crumb)
    }));
    let guard = sentry::init(options);
    Ok(ReportingGuard { _guard: guard })
}

/// The tracing layer that turns log events into Sentry events and breadcrumbs (see the module
/// doc). A no-op until `init` binds a client.
pub fn tracing_layer() -> ReportLayer {
    ReportLayer {
        // No Sentry spans (`SpanLayer`): they would cost every request an allocation and a hub
        // lookup for performance data nobody asked for.
        errors: ErrorLayer::new(),
        crumbs: BreadcrumbLayer::new(),
    }
}

/// Sentry's error and breadcrumb layers behind one level-and-target choice (see the module doc).
pub struct ReportLayer {
    errors: ErrorLayer,
    crumbs: BreadcrumbLayer,
}

impl<S> Layer<S> for ReportLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_event(&self, event: &tracing::Event<'_>, ctx: LayerContext<'_, S>) {
        let meta = event.metadata();
        match *meta.level() {
            tracing::Level::ERROR if meta.target().starts_with("x402_gate") => {
                self.errors.on_event(event, ctx)
            }
            tracing::Level::ERROR | tracing::Level::WARN => self.crumbs.on_event(event, ctx),
            _ => {}
        }
    }
}

/// Cuts secrets out of texts and events.
#[derive(Debug, Default)]
pub struct Scrubber {
    /// Longest first, so a key inside a URL that is itself listed goes with the URL.
    secrets: Vec<String>,
}

impl Scrubber {
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Self {
        let mut secrets: Vec<String> = secrets
            .into_iter()
            .filter(|s| s.len() >= MIN_SECRET_LEN)
            .collect();
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Scrubber { secrets }
    }

    /// Every secret `config` holds, and the DSN reported to.
    pub fn from_config(config: &Config, dsn: &str) -> Self {
        let mut s = vec![dsn.to_string()];
        if let Some(t) = &config.admin.token {
            s.push(t.expose().to_string());
        }
        for net in config.networks.values() {
            url_secrets(&net.rpc_url, &mut s);
            match &net.signer {
                NetworkSigner::Evm { settler_keys, .. } => {
                    for k in settler_keys {
                        let k = k.expose();
                        let bare = k.strip_prefix("0x").unwrap_or(k);
                        s.extend([k.to_string(), bare.to_string(), bare.to_ascii_lowercase()]);
                    }
                }
                NetworkSigner::Solana { fee_payer_key, .. } => {
                    s.push(fee_payer_key.expose().to_string())
                }
            }
        }
        url_secrets(&config.database.url, &mut s);
        if let Some(r) = &config.rate_limit.redis_url {
            url_secrets(r.expose(), &mut s);
        }
        Scrubber::new(s)
    }

    /// `text` without any configured secret, then through `redact::scrub`.
    pub fn text(&self, text: &str) -> String {
        let mut out = Cow::Borrowed(text);
        for secret in &self.secrets {
            if out.contains(secret.as_str()) {
                out = Cow::Owned(out.replace(secret.as_str(), SECRET_MARK));
            }
        }
        scrub(&out)
    }

    fn value(&self, v: &mut Value) {
        match v {
            Value::String(s) => *s = self.text(s),
            Value::Array(items) => items.iter_mut().for_each(|i| self.value(i)),
            Value::Object(map) => map.values_mut().for_each(|i| self.value(i)),
            _ => {}
        }
    }

    /// The event with its texts scrubbed, or `None` when a configured secret survives anywhere
    /// in it (a field this function does not know): then nothing is sent.
    pub fn event(&self, mut event: Event<'static>) -> Option<Event<'static>> {
        // Nothing about the client or its request leaves: payment headers live there.
        event.request = None;
        event.user = None;
        event.message = event.message.map(|m| self.text(&m));
        if let Some(entry) = event.logentry.as_mut() {
            entry.message = self.text(&entry.message);
            entry.params.iter_mut().for_each(|p| self.value(p));
        }
        for e in event.exception.values.iter_mut() {
            e.value = e.value.as_ref().map(|v| self.text(v));
        }
        for crumb in event.breadcrumbs.values.iter_mut() {
            crumb.message = crumb.message.as_ref().map(|m| self.text(m));
            crumb.data.values_mut().for_each(|v| self.value(v));
        }
        event.extra.values_mut().for_each(|v| self.value(v));
        for v in event.tags.values_mut() {
            *v = self.text(v);
        }
        for c in event.contexts.values_mut() {
            if let Context::Other(map) = c {
                map.values_mut().for_each(|v| self.value(v));
            }
        }
        event.culprit = event.culprit.map(|c| self.text(&c));
        event.transaction = event.transaction.map(|t| self.text(&t));
        let whole = serde_json::to_string(&event).ok()?;
        if self.secrets.iter().any(|s| whole.contains(s.as_str())) {
            tracing::warn!(
                "an error report still held a configured secret after scrubbing; not sent"
            );
            return None;
        }
        Some(event)
    }
}

/// A URL and the parts of it that are credentials: the password, long path segments (hosted RPC
/// providers put the API key there: `…/v2/<key>`) and query values.
fn url_secrets(url: &str, out: &mut Vec<String>) {
    out.push(url.to_string());
    let Ok(parsed) = url::Url::parse(url) else {
        return;
    };
    if let Some(p) = parsed.password() {
        out.push(p.to_string());
    }
    if let Some(segments) = parsed.path_segments() {
        out.extend(segments.filter(|s| s.len() >= 16).map(str::to_string));
    }
    out.extend(parsed.query_pairs().map(|(_, v)| v.into_owned()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_secrets_and_secret_shapes_are_cut() {
        let key = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
        let mut s = vec![key.to_string(), "admin-token-0123456789".to_string()];
        url_secrets(
            "https://rpc.example/v2/AbCdEf0123456789xyz?apikey=QQQQ1111wwww",
            &mut s,
        );
        let scrubber = Scrubber::new(s);
        let text = format!(
            "failed: key {key} bare {} token admin-token-0123456789 rpc https://rpc.example/v2/AbCdEf0123456789xyz?apikey=QQQQ1111wwww \
             alone AbCdEf0123456789xyz header eyJ4NDAyVmVyc2lvbiI6MiwicGF5bG9hZCI6e319 tx 0x1234",
            &key[2..]
        );
        let out = scrubber.text(&text);
        for secret in [
            key,
            &key[2..],
            "admin-token-0123456789",
            "AbCdEf0123456789xyz",
            "QQQQ1111wwww",
            "eyJ4NDAy",
        ] {
            assert!(!out.contains(secret), "{secret} in {out}");
        }
        assert!(out.starts_with("failed: key"), "{out}");
        assert!(out.contains("tx 0x1234"), "public hex stays: {out}");
    }

    #[test]
    fn an_event_is_scrubbed_everywhere_or_not_sent() {
        let scrubber = Scrubber::new(["super-secret-value-1".to_string()]);
        let mut event = Event {
            message: Some("boom super-secret-value-1".into()),
            ..Default::default()
        };
        event
            .extra
            .insert("detail".into(), "with super-secret-value-1".into());
        let clean = scrubber.event(event).expect("scrubbed, so sent");
        let json = serde_json::to_string(&clean).unwrap();
        assert!(!json.contains("super-secret-value-1"), "{json}");
        assert!(json.contains("boom"));
        // A field the scrubber does not walk: the event is dropped rather than leak.
        let leaky = Event {
            server_name: Some("super-secret-value-1".into()),
            ..Default::default()
        };
        assert!(scrubber.event(leaky).is_none());
    }
}
