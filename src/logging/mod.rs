//! Logs: the process's `tracing` subscriber (human-readable text or one JSON object a line,
//! filtered by `RUST_LOG`), and request ids, which tie every line of one request together.
//!
//! A request id comes from the client's `X-Request-Id` when it is sane (1-128 characters of
//! `[A-Za-z0-9._:-]`: nothing that could forge a log line or smuggle a secret-looking blob), and
//! is generated otherwise. The proxy and the management API each open a `request` span carrying
//! it, so every line written while the request is served, the payment core's included, names it.
//!
//! The one access line per request is written at target `x402_gate::access` (see `ACCESS`).
//! Nothing here ever logs a header value other than the request id.
//!
//! `batch.rs`: the thread that writes the lines to stderr in batches. `access.rs`: the access
//! line's text, written directly (the same bytes as tracing-subscriber's, at a fraction of the
//! cost), `timestamp.rs` its timestamp, the date worked out once a second.
//!
//! May import: config (the format), reporting (its tracing layer). tracing-subscriber stays here
//! and in `main`.

use tracing::Subscriber;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

mod access;
mod batch;
mod timestamp;

/// The request header that carries the request id, both ways.
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// `REQUEST_ID_HEADER` as a header name: looked up in every request, where a name given as text
/// would be parsed again each time.
pub static REQUEST_ID_NAME: http::HeaderName = http::HeaderName::from_static(REQUEST_ID_HEADER);
/// The target of the one access-log line per request.
pub const ACCESS: &str = "x402_gate::access";
/// The filter when `RUST_LOG` is unset.
pub const DEFAULT_FILTER: &str = "info,pingora_core=warn,pingora_proxy=warn";

const MAX_REQUEST_ID: usize = 128;

/// The filter from `RUST_LOG`, or `DEFAULT_FILTER`.
pub fn env_filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| DEFAULT_FILTER.into())
}

/// A subscriber writing `format` lines that pass `filter` to `writer`. `main` installs it with
/// stderr; tests install it with a buffer.
pub fn subscriber<W>(
    format: LogFormat,
    filter: EnvFilter,
    writer: W,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    subscriber_with(format, filter, writer, false, false)
}

/// `subscriber` with error reporting's layer (`reporting::tracing_layer`): tests of reporting
/// install it with a buffer.
pub fn reporting_subscriber<W>(
    format: LogFormat,
    filter: EnvFilter,
    writer: W,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    subscriber_with(format, filter, writer, false, true)
}

/// `subscriber`, with terminal colours when `ansi` (only ever for a terminal: escape codes in a
/// log file or a journal are noise), and with error reporting's layer when `report`.
fn subscriber_with<W>(
    format: LogFormat,
    filter: EnvFilter,
    writer: W,
    ansi: bool,
    report: bool,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    use tracing_subscriber::layer::SubscriberExt;
    let builder = tracing_subscriber::fmt()
        .with_timer(timestamp::Rfc3339Micros)
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer);
    // `Option<Layer>` is a layer: without reporting, nothing is added to any event's path.
    match format {
        LogFormat::Text => Box::new(
            builder
                .event_format(access::AccessText::new(timestamp::Rfc3339Micros))
                .finish()
                .with(report.then(crate::reporting::tracing_layer)),
        ),
        // Span fields (the request id) go in `span` and `spans`; the event's own fields at the
        // top level, next to `message`, so a log shipper can index them directly.
        LogFormat::Json => Box::new(
            builder
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(true)
                .finish()
                .with(report.then(crate::reporting::tracing_layer)),
        ),
    }
}

/// Keeps the log writer thread running; dropping it writes out every line still waiting.
#[must_use = "dropping the guard stops the log writer"]
pub struct LogGuard {
    _writer: Option<batch::BatchGuard>,
}

/// Installs the process-wide subscriber on stderr (and routes the `log` crate's records, which
/// pingora writes, through it), with error reporting's layer when `report` (a Sentry DSN is
/// configured). Fails only if one was installed already.
///
/// With `background`, a thread of its own writes the lines, in batches (`batch.rs`): a request
/// appends its access line to a buffer and goes on, instead of making a `write` to stderr (a
/// system call, and a wait if stderr is a pipe whose reader is slow). Nothing is dropped (see
/// `batch::MAX_PENDING`); the lines still waiting when the process is killed are lost, those
/// waiting at a normal exit are written when the guard drops. Without `background` (`--daemon`:
/// the thread would not survive pingora's fork), every line is written by the thread that logs
/// it.
pub fn init(
    format: LogFormat,
    report: bool,
    background: bool,
) -> Result<LogGuard, tracing_subscriber::util::TryInitError> {
    use std::io::IsTerminal;
    use tracing_subscriber::util::SubscriberInitExt;
    let ansi = std::io::stderr().is_terminal();
    match background.then(|| batch::spawn(std::io::stderr())) {
        Some(Ok((writer, guard))) => {
            subscriber_with(format, env_filter(), writer, ansi, report).try_init()?;
            Ok(LogGuard {
                _writer: Some(guard),
            })
        }
        // No thread could be started: log the slow way rather than not at all.
        _ => {
            subscriber_with(format, env_filter(), std::io::stderr, ansi, report).try_init()?;
            Ok(LogGuard { _writer: None })
        }
    }
}

/// Whether a client-sent request id may be used as is.
pub fn is_sane_request_id(id: &str) -> bool {
    (1..=MAX_REQUEST_ID).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// The client's request id when it sent exactly one sane `X-Request-Id`, else a fresh one.
pub fn request_id(headers: &http::HeaderMap) -> String {
    let mut sent = headers.get_all(&REQUEST_ID_NAME).iter();
    match (sent.next(), sent.next()) {
        (Some(v), None) => match v.to_str() {
            Ok(id) if is_sane_request_id(id) => id.to_string(),
            _ => new_request_id(),
        },
        _ => new_request_id(),
    }
}

/// 16 random bytes, hex: unguessable and unique enough to find one request among billions.
///
/// The bytes are the operating system's, fetched 4 KiB at a time per thread: one `getrandom`
/// call per 256 requests instead of one each (it showed in the free route's profile), and never
/// a byte used twice.
pub fn new_request_id() -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    thread_local! {
        static POOL: std::cell::RefCell<(Box<[u8; 4096]>, usize)> =
            std::cell::RefCell::new((Box::new([0; 4096]), 4096));
    }
    POOL.with_borrow_mut(|(bytes, used)| {
        if *used + 16 > bytes.len() {
            getrandom::fill(&mut bytes[..]).expect("the OS random source is available");
            *used = 0;
        }
        let mut id = String::with_capacity(32);
        for b in &bytes[*used..*used + 16] {
            id.push(HEX[(b >> 4) as usize] as char);
            id.push(HEX[(b & 0xf) as usize] as char);
        }
        *used += 16;
        id
    })
}

/// The span every line of one request is written in.
pub fn request_span(request_id: &str) -> tracing::Span {
    tracing::info_span!("request", request_id = %request_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sane_ids_are_kept_and_others_replaced() {
        for ok in ["a", "req-1", "01J9Z:abc.def_x", &"x".repeat(128)] {
            assert!(is_sane_request_id(ok), "{ok}");
        }
        for bad in [
            "",
            &"x".repeat(129),
            "has space",
            "new\nline",
            "quote\"",
            "{json}",
            "ключ",
            "a/b",
        ] {
            assert!(!is_sane_request_id(bad), "{bad:?}");
        }
        let mut h = http::HeaderMap::new();
        h.insert(REQUEST_ID_HEADER, "client-id-7".parse().unwrap());
        assert_eq!(request_id(&h), "client-id-7");
        h.insert(REQUEST_ID_HEADER, "not sane!".parse().unwrap());
        let generated = request_id(&h);
        assert_eq!(generated.len(), 32);
        assert!(generated.bytes().all(|b| b.is_ascii_hexdigit()));
        // Two ids are ambiguous: neither is trusted.
        h.insert(REQUEST_ID_HEADER, "one".parse().unwrap());
        h.append(REQUEST_ID_HEADER, "two".parse().unwrap());
        assert_ne!(request_id(&h), "one");
        assert_ne!(new_request_id(), new_request_id());
    }

    #[test]
    fn generated_ids_stay_distinct_across_pool_refills() {
        // 1,000 ids span four refills of a thread's 4 KiB pool of OS randomness.
        let ids: std::collections::HashSet<String> = (0..1000).map(|_| new_request_id()).collect();
        assert_eq!(ids.len(), 1000);
        assert!(ids.iter().all(|id| id.len() == 32
            && id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))));
    }
}
