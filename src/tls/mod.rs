//! TLS and HTTP/2 at the edge: the public listener terminates TLS itself (pingora's rustls
//! acceptor), so the gateway can face the internet without another proxy in front.
//!
//! certs.rs loads and checks the PEM files and holds the `CertResolver` that every handshake asks
//! for the current key pair. This file builds the listener's pingora `TlsSettings` (the resolver,
//! ALPN `h2` + `http/1.1`) and runs `CertReloader`, the background service that re-reads the
//! files on SIGHUP and whenever their content changes, and swaps the new pair in without a
//! restart. A pair that does not load (half-written files, a key that does not match) is refused
//! with a log line and the old pair keeps serving.
//!
//! May import: config. pingora only here in mod.rs (the listener settings and the service).

pub mod certs;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::ALPN;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

pub use certs::{CertBytes, CertError, CertFiles, CertResolver};

use crate::config::TlsConfig;

/// How often the files are compared with what is served. Reading two small files is cheap, and
/// a renewed certificate (certbot, cert-manager) is picked up within seconds without a signal.
pub const CHECK_EVERY: Duration = Duration::from_secs(5);

/// The public listener's certificate, as loaded at start and swapped on reload.
pub struct EdgeCert {
    pub files: CertFiles,
    pub resolver: Arc<CertResolver>,
    state: Mutex<ReloadState>,
}

struct ReloadState {
    /// What the served pair was loaded from.
    served: CertBytes,
    /// Files that failed to load, so one broken pair is logged once, not every few seconds.
    refused: Option<CertBytes>,
}

/// What a reload did.
#[derive(Debug)]
pub enum Reloaded {
    /// The files are what is served already.
    Unchanged,
    /// A new pair is served from now on.
    Swapped,
}

impl EdgeCert {
    /// Loads the pair; an error here stops the gateway before it listens.
    pub fn load(config: &TlsConfig) -> Result<Self, CertError> {
        let files = config.files.clone();
        let (key, served) = files.load()?;
        Ok(EdgeCert {
            files,
            resolver: Arc::new(CertResolver::new(key)),
            state: Mutex::new(ReloadState {
                served,
                refused: None,
            }),
        })
    }

    /// Re-reads the files and serves them if they changed and load. Errors leave the pair that
    /// is served as it was.
    pub fn reload(&self) -> Result<Reloaded, CertError> {
        let bytes = self.files.read()?;
        let mut state = self.state.lock().expect("not poisoned");
        if bytes == state.served {
            state.refused = None;
            return Ok(Reloaded::Unchanged);
        }
        match self.files.parse(&bytes) {
            Ok(key) => {
                self.resolver.swap(key);
                state.served = bytes;
                state.refused = None;
                Ok(Reloaded::Swapped)
            }
            Err(e) => {
                state.refused = Some(bytes);
                Err(e)
            }
        }
    }

    /// `reload`, logged: a refusal once per distinct content of the files.
    fn reload_logged(&self, why: &str) {
        let before = self.state.lock().expect("not poisoned").refused.clone();
        match self.reload() {
            Ok(Reloaded::Swapped) => {
                tracing::info!(cert = %self.files.cert.display(), why, "TLS certificate reloaded")
            }
            Ok(Reloaded::Unchanged) => {
                if why == "SIGHUP" {
                    tracing::info!(cert = %self.files.cert.display(), "TLS certificate unchanged");
                }
            }
            Err(e) => {
                let now = self.state.lock().expect("not poisoned").refused.clone();
                if why == "SIGHUP" || now.is_none() || now != before {
                    tracing::error!(
                        why,
                        "TLS certificate not reloaded, the old one keeps serving: {e}"
                    );
                }
            }
        }
    }

    /// pingora's settings for the TLS listener: certificates from our resolver, and ALPN `h2`
    /// then `http/1.1` when HTTP/2 is on (pingora serves h2 on a connection that chose it).
    pub fn listener_settings(&self, http2: bool) -> anyhow::Result<TlsSettings> {
        // The paths are never read: pingora's rustls `build()` takes the resolver instead.
        let mut settings = TlsSettings::intermediate("", "")
            .map_err(|e| anyhow::anyhow!("TLS listener settings: {e}"))?;
        let resolver: Arc<dyn rustls::server::ResolvesServerCert> = self.resolver.clone();
        settings.set_cert_resolver(resolver);
        if http2 {
            settings.enable_h2();
        } else {
            settings.set_alpn(ALPN::H1);
        }
        Ok(settings)
    }
}

/// Re-reads the certificate on SIGHUP and every `CHECK_EVERY`.
pub struct CertReloader {
    pub cert: Arc<EdgeCert>,
}

#[async_trait]
impl BackgroundService for CertReloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        use tokio::signal::unix::{signal, SignalKind};
        // Several listeners of SIGHUP may coexist (tokio fans a signal out to every stream), so
        // the config reload can watch it too.
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(
                    "TLS certificate: cannot watch SIGHUP ({e}); reloading on change only"
                );
                None
            }
        };
        let mut tick = tokio::time::interval(CHECK_EVERY);
        tick.tick().await;
        loop {
            let why = tokio::select! {
                _ = shutdown.changed() => return,
                _ = tick.tick() => "changed on disk",
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => None } } => "SIGHUP",
            };
            self.cert.reload_logged(why);
        }
    }
}
