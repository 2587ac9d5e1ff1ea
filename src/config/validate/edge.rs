//! `[server.tls]`, the upgrade socket and pid file of `[server]`, and `[sentry]`: what the process
//! needs at the edge of the machine. The certificate files are read and checked here, so
//! `--check` finds a missing file or a key that does not match before a start or upgrade would.

use std::path::PathBuf;
use std::str::FromStr;

use super::*;
use crate::tls::CertFiles;

pub(super) const DEFAULT_UPGRADE_SOCK: &str = "/tmp/x402-gate-upgrade.sock";
pub(super) const DEFAULT_PID_FILE: &str = "/tmp/x402-gate.pid";
/// A Unix socket path must fit `sun_path` (108 bytes with its NUL); pingora panics on a longer
/// one in the middle of an upgrade, so it is refused here.
const MAX_SOCKET_PATH: usize = 107;

pub(super) fn upgrade_sock(raw: Option<String>, e: &mut Errors) -> PathBuf {
    let path = raw.unwrap_or_else(|| DEFAULT_UPGRADE_SOCK.to_string());
    if path.is_empty() {
        e.push("server.upgrade_sock", "must not be empty");
    } else if path.len() > MAX_SOCKET_PATH {
        e.push(
            "server.upgrade_sock",
            format!(
                "is {} bytes long; a Unix socket path has at most {MAX_SOCKET_PATH}",
                path.len()
            ),
        );
    }
    PathBuf::from(path)
}

pub(super) fn pid_file(raw: Option<String>, e: &mut Errors) -> PathBuf {
    let path = raw.unwrap_or_else(|| DEFAULT_PID_FILE.to_string());
    if path.is_empty() {
        e.push("server.pid_file", "must not be empty");
    }
    PathBuf::from(path)
}

/// `[server.tls]`: both files present and loadable as one matching pair; an optional second
/// listener that collides with none of the others.
pub(super) fn tls(
    raw: Option<RawTls>,
    taken: &[(&str, SocketAddr)],
    e: &mut Errors,
) -> Option<TlsConfig> {
    let raw = raw?;
    let mut path = |key: &str, value: Option<String>| -> Option<PathBuf> {
        match value {
            Some(v) if !v.is_empty() => Some(PathBuf::from(v)),
            _ => {
                e.push(format!("server.tls.{key}"), "is required: a PEM file path");
                None
            }
        }
    };
    let cert = path("cert", raw.cert);
    let key = path("key", raw.key);
    let listen = raw
        .listen
        .and_then(|text| match text.parse::<SocketAddr>() {
            Ok(a) => {
                if a.port() != 0 {
                    if let Some((other, _)) = taken.iter().find(|(_, b)| *b == a) {
                        e.push(
                            "server.tls.listen",
                            format!("{a} is already used by {other}"),
                        );
                    }
                }
                Some(a)
            }
            Err(_) => {
                e.push(
                    "server.tls.listen",
                    format!("`{text}` is not an address like 0.0.0.0:8443"),
                );
                None
            }
        });
    // Absolute, so the reloader finds them after a daemon changed its working directory; not
    // canonical: certbot's `live/` paths are symlinks that a renewal repoints.
    let absolute = |p: PathBuf| std::path::absolute(&p).unwrap_or(p);
    let files = CertFiles {
        cert: absolute(cert?),
        key: absolute(key?),
    };
    if let Err(err) = files.load() {
        e.push(
            format!("server.tls.{}", err.file().key_name()),
            err.to_string(),
        );
    }
    Some(TlsConfig {
        files,
        listen,
        http2: raw.http2.unwrap_or(true),
    })
}

pub(super) fn sentry(raw: RawSentry, e: &mut Errors) -> SentryConfig {
    let dsn = raw.dsn.filter(|d| !d.is_empty()).map(|d| {
        if let Err(err) = sentry::types::Dsn::from_str(&d) {
            // The DSN itself is a credential: name the problem, not the value.
            e.push(
                "sentry.dsn",
                format!("is not a Sentry DSN like https://KEY@HOST/PROJECT ({err})"),
            );
        }
        Secret::new(d)
    });
    let sample_rate = raw.sample_rate.unwrap_or(1.0);
    if !(0.0..=1.0).contains(&sample_rate) {
        e.push("sentry.sample_rate", "must be between 0.0 and 1.0");
    }
    SentryConfig {
        dsn,
        environment: raw.environment.filter(|s| !s.is_empty()),
        sample_rate: sample_rate.clamp(0.0, 1.0),
    }
}
