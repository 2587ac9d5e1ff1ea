//! The access line in text, written directly instead of through `fmt::Arguments`.
//!
//! tracing-subscriber's text formatter writes every piece of a line through `write!` and a
//! `Debug` impl: a field name, an `=`, a string escaped one `char` at a time. For the access line
//! (one per request, up to 17 fields) that was about 21k of the free route's 169k instructions per
//! request (callgrind, README "Instructions per request"). `AccessText` writes the very same
//! bytes for events of the access target: names and `=` pushed as they are, a string that needs
//! no escape pushed between quotes, integers through `itoa`. Every other event goes to the
//! formatter it wraps, and so does an access line it could not write exactly as
//! tracing-subscriber would: a terminal's colours, a message that needs escaping, a raw
//! identifier or an error value. The tests pin byte-for-byte equality with tracing-subscriber's
//! own `Full` format over lines of every shape, the odd ones included.

use std::cell::RefCell;
use std::fmt::{self, Write};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{Format, Full, Writer};
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// tracing-subscriber's `Full` text format with `timer`'s timestamps, the access target's lines
/// written directly.
pub struct AccessText<T> {
    inner: Format<Full, T>,
    timer: T,
}

impl<T: Clone> AccessText<T> {
    pub fn new(timer: T) -> Self {
        AccessText {
            inner: tracing_subscriber::fmt::format().with_timer(timer.clone()),
            timer,
        }
    }
}

/// The access line could not be written exactly as tracing-subscriber writes it.
struct Unusual;

impl<S, N, T> FormatEvent<S, N> for AccessText<T>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    T: FormatTime,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        if event.metadata().target() != super::ACCESS || writer.has_ansi_escapes() {
            return self.inner.format_event(ctx, writer, event);
        }
        // Written to a buffer of its own first, so that a line found unusual half-way is written
        // whole by `inner` instead.
        thread_local! {
            static LINE: RefCell<String> = const { RefCell::new(String::new()) };
        }
        LINE.with(|line| {
            // Borrowed already only if a field's `Debug` logged an access line: the slow way.
            let Ok(mut line) = line.try_borrow_mut() else {
                return self.inner.format_event(ctx, writer, event);
            };
            line.clear();
            match self.write_line(ctx, &mut line, event) {
                Ok(()) => writer.write_str(&line),
                Err(Unusual) => self.inner.format_event(ctx, writer, event),
            }
        })
    }
}

impl<T: FormatTime> AccessText<T> {
    /// `Full`'s layout: timestamp, level, the spans with their fields, target, the fields.
    fn write_line<S, N>(
        &self,
        ctx: &FmtContext<'_, S, N>,
        line: &mut String,
        event: &Event<'_>,
    ) -> Result<(), Unusual>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
        N: for<'a> FormatFields<'a> + 'static,
    {
        if self.timer.format_time(&mut Writer::new(line)).is_err() {
            line.push_str("<unknown time>");
        }
        let meta = event.metadata();
        line.push_str(match *meta.level() {
            Level::TRACE => " TRACE ",
            Level::DEBUG => " DEBUG ",
            Level::INFO => "  INFO ",
            Level::WARN => "  WARN ",
            Level::ERROR => " ERROR ",
        });
        if let Some(scope) = ctx.event_scope() {
            let mut seen = false;
            for span in scope.from_root() {
                line.push_str(span.metadata().name());
                seen = true;
                let ext = span.extensions();
                if let Some(fields) = ext.get::<FormattedFields<N>>() {
                    if !fields.is_empty() {
                        line.push('{');
                        line.push_str(fields);
                        line.push('}');
                    }
                }
                line.push(':');
            }
            if seen {
                line.push(' ');
            }
        }
        line.push_str(meta.target());
        line.push_str(": ");
        let mut fields = Fields {
            line,
            first: true,
            unusual: false,
        };
        event.record(&mut fields);
        if fields.unusual {
            return Err(Unusual);
        }
        line.push('\n');
        Ok(())
    }
}

/// Writes an event's fields as tracing-subscriber's `DefaultFields` does: `message` bare, the
/// others `name=value` with the value's `Debug`, separated by spaces.
struct Fields<'a> {
    line: &'a mut String,
    first: bool,
    unusual: bool,
}

impl Fields<'_> {
    /// The separating space, and `name=` unless the field is the message. `false` when the field
    /// is not one this writer takes (the line goes to tracing-subscriber then).
    fn start(&mut self, field: &Field) -> bool {
        let name = field.name();
        // Raw identifiers lose their `r#`; `log.` fields are the `log` crate's metadata, skipped.
        // Neither is ever in an access line.
        if self.unusual || name.starts_with("r#") || name.starts_with("log.") {
            self.unusual = true;
            return false;
        }
        if !std::mem::take(&mut self.first) {
            self.line.push(' ');
        }
        if name != "message" {
            self.line.push_str(name);
            self.line.push('=');
        }
        true
    }

    /// The message, which tracing-subscriber writes with terminal escapes made harmless: as it
    /// is when it needs none (printable ASCII), else unusual.
    fn message(&mut self, from: usize) {
        if !self.line.as_bytes()[from..]
            .iter()
            .all(|b| (0x20..0x7f).contains(b))
        {
            self.unusual = true;
        }
    }
}

/// Whether `s`'s `Debug` is `s` between quotes: printable ASCII without a quote or a backslash.
fn plain(s: &str) -> bool {
    s.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if !self.start(field) {
            return;
        }
        if field.name() == "message" {
            let from = self.line.len();
            self.line.push_str(value);
            self.message(from);
        } else if plain(value) {
            self.line.push('"');
            self.line.push_str(value);
            self.line.push('"');
        } else {
            let _ = write!(self.line, "{value:?}");
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.start(field) {
            self.line.push_str(itoa::Buffer::new().format(value));
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if self.start(field) {
            self.line.push_str(itoa::Buffer::new().format(value));
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.start(field) {
            self.line.push_str(if value { "true" } else { "false" });
        }
    }

    fn record_error(&mut self, _: &Field, _: &(dyn std::error::Error + 'static)) {
        // Written with its sources by tracing-subscriber; never in an access line.
        self.unusual = true;
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if !self.start(field) {
            return;
        }
        let from = self.line.len();
        let _ = write!(self.line, "{value:?}");
        if field.name() == "message" {
            self.message(from);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    /// One timestamp for both formatters, so that their lines compare whole.
    #[derive(Clone, Copy)]
    struct Fixed;
    impl FormatTime for Fixed {
        fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
            w.write_str("2026-11-29T09:00:00.123456Z")
        }
    }

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    impl<'a> MakeWriter<'a> for Buf {
        type Writer = Buf;
        fn make_writer(&'a self) -> Buf {
            self.clone()
        }
    }

    /// Every shape of line the tests emit, each under a subscriber and into a buffer.
    fn lines(ours: bool, ansi: bool) -> String {
        let buf = Buf::default();
        let builder = tracing_subscriber::fmt()
            .with_env_filter("trace")
            .with_ansi(ansi)
            .with_writer(buf.clone());
        let subscriber: Box<dyn Subscriber + Send + Sync> = if ours {
            Box::new(builder.event_format(AccessText::new(Fixed)).finish())
        } else {
            let theirs = tracing_subscriber::fmt::format().with_timer(Fixed);
            Box::new(builder.event_format(theirs).finish())
        };
        tracing::subscriber::with_default(subscriber, emit);
        let bytes = buf.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    fn emit() {
        let route: Option<&str> = Some("/paid/*");
        let none: Option<&str> = None;
        // The proxy's line, in the request span, with unset fields left out.
        tracing::info_span!("request", request_id = %"0123abcd").in_scope(|| {
            tracing::info!(
                target: "x402_gate::access",
                method = "GET",
                path = "/paid/doc",
                route,
                kind = "priced",
                tenant = none,
                status = Some(201u16),
                payment = "admitted",
                total_ms = 46.8,
                verify_ms = 0.001,
                settle_ms = 1e-7,
                big_ms = 1e17,
                client = "127.0.0.1",
                "request"
            );
            // Strings that need escaping: quotes, backslashes, non-ASCII, control characters.
            tracing::info!(
                target: "x402_gate::access",
                path = "/a\"b\\c",
                tenant = "café",
                odd = "tab\there\u{1b}[31m\u{85}",
                "request"
            );
        });
        // No span; numbers of each kind, a bool, Display and Debug values; message last.
        tracing::warn!(
            target: "x402_gate::access",
            negative = -5i64,
            max = u64::MAX,
            wide = 1u128 << 100,
            yes = true,
            shown = %"display me",
            debugged = ?vec!["a", "b"],
            "request {}",
            7
        );
        // Nested spans, one without fields.
        tracing::info_span!("outer").in_scope(|| {
            tracing::error_span!("request", request_id = "q\"uoted").in_scope(|| {
                tracing::error!(target: "x402_gate::access", listener = "admin", status = 500u16);
            })
        });
        // The message needs escaping: tracing-subscriber's own writer takes it.
        tracing::info!(target: "x402_gate::access", path = "/x", "evil \u{1b}[2J message");
        let msg = "bell\u{7}";
        tracing::info!(target: "x402_gate::access", message = msg, path = "/y");
        // Raw identifiers and errors, also the wrapped formatter's.
        tracing::info!(target: "x402_gate::access", r#type = "raw", path = "/z");
        let err = std::io::Error::other("boom");
        tracing::info!(target: "x402_gate::access", error = &err as &(dyn std::error::Error + 'static), "failed");
        // Not the access target: never ours.
        tracing::info!(target: "x402_gate::proxy", method = "GET", "other");
        tracing::debug!(target: "x402_gate::access", "debug level");
        tracing::trace!(target: "x402_gate::access", "trace level");
    }

    #[test]
    fn access_lines_are_byte_for_byte_tracing_subscribers() {
        let (theirs, ours) = (lines(false, false), lines(true, false));
        assert_eq!(theirs.lines().count(), 11, "{theirs}");
        for (t, o) in theirs.lines().zip(ours.lines()) {
            assert_eq!(t, o);
        }
        assert_eq!(theirs, ours);
        // The expected layout, spelled out once for the common line.
        assert!(
            ours.starts_with(
                "2026-11-29T09:00:00.123456Z  INFO request{request_id=0123abcd}: x402_gate::access: request method=\"GET\" path=\"/paid/doc\" route=\"/paid/*\" kind=\"priced\" status=201 payment=\"admitted\" total_ms=46.8 verify_ms=0.001 settle_ms=1e-7 big_ms=1e17 client=\"127.0.0.1\"\n"
            ),
            "{ours}"
        );
    }

    #[test]
    fn with_terminal_colours_every_line_is_tracing_subscribers() {
        let (theirs, ours) = (lines(false, true), lines(true, true));
        assert!(theirs.contains('\u{1b}'), "colours are on: {theirs}");
        assert_eq!(theirs, ours);
    }

    #[test]
    fn plain_strings_are_those_debug_leaves_alone() {
        for s in ["", "abc", "a b", "/p?q=1&r", "'single'", "~!@#$%^&*()"] {
            assert!(plain(s), "{s}");
            assert_eq!(format!("{s:?}"), format!("\"{s}\""));
        }
        // Escaped by `Debug`: written through it.
        for s in ["\"", "\\", "\t", "\u{7f}", "\u{1b}", "\u{85}"] {
            assert!(!plain(s), "{s}");
            assert_ne!(format!("{s:?}"), format!("\"{s}\""));
        }
        // Left alone by `Debug`, but not ASCII: written through it too, to be sure.
        assert!(!plain("café"));
    }
}
