//! The public listener's certificate: PEM files -> a checked rustls `CertifiedKey`, and the
//! resolver that hands the current one to every handshake and can be swapped while the listener
//! runs.
//!
//! Pure apart from reading the two files: no pingora here, so `config` can check the files at
//! `--check` with the same code that loads them at start.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The two files of `[server.tls]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    /// The certificate chain, leaf first (`fullchain.pem`).
    pub cert: PathBuf,
    /// The leaf's private key: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
    pub key: PathBuf,
}

/// Which of the two files an error is about, for its key path (`server.tls.cert`/`.key`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertFile {
    Cert,
    Key,
}

impl CertFile {
    pub fn key_name(self) -> &'static str {
        match self {
            CertFile::Cert => "cert",
            CertFile::Key => "key",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        file: CertFile,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} holds no PEM certificate", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)", path.display())]
    NoKey { path: PathBuf },
    #[error("{} is not valid PEM: {reason}", path.display())]
    BadPem {
        file: CertFile,
        path: PathBuf,
        reason: String,
    },
    #[error("the private key cannot be used: {0}")]
    UnusableKey(String),
    #[error("the private key does not belong to the first certificate of {}", cert.display())]
    Mismatch { cert: PathBuf },
}

impl CertError {
    /// The file the error is about.
    pub fn file(&self) -> CertFile {
        match self {
            CertError::Read { file, .. } | CertError::BadPem { file, .. } => *file,
            CertError::NoCertificate { .. } => CertFile::Cert,
            CertError::NoKey { .. } | CertError::UnusableKey(_) | CertError::Mismatch { .. } => {
                CertFile::Key
            }
        }
    }
}

/// The files' bytes as last read, so a reload can tell whether anything changed without trusting
/// modification times (`cp -p` and some deploy tools keep them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertBytes {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
}

impl CertFiles {
    pub fn read(&self) -> Result<CertBytes, CertError> {
        let read = |file: CertFile, path: &Path| {
            std::fs::read(path).map_err(|source| CertError::Read {
                file,
                path: path.to_path_buf(),
                source,
            })
        };
        Ok(CertBytes {
            cert: read(CertFile::Cert, &self.cert)?,
            key: read(CertFile::Key, &self.key)?,
        })
    }

    /// Reads and checks both files: at least one certificate, one private key that rustls can
    /// sign with, and that key belonging to the first (leaf) certificate.
    pub fn load(&self) -> Result<(CertifiedKey, CertBytes), CertError> {
        let bytes = self.read()?;
        let key = self.parse(&bytes)?;
        Ok((key, bytes))
    }

    pub fn parse(&self, bytes: &CertBytes) -> Result<CertifiedKey, CertError> {
        let certs = CertificateDer::pem_slice_iter(&bytes.cert)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| CertError::BadPem {
                file: CertFile::Cert,
                path: self.cert.clone(),
                reason: e.to_string(),
            })?;
        if certs.is_empty() {
            return Err(CertError::NoCertificate {
                path: self.cert.clone(),
            });
        }
        let key = match PrivateKeyDer::from_pem_slice(&bytes.key) {
            Ok(k) => k,
            Err(pem::Error::NoItemsFound) => {
                return Err(CertError::NoKey {
                    path: self.key.clone(),
                })
            }
            Err(e) => {
                return Err(CertError::BadPem {
                    file: CertFile::Key,
                    path: self.key.clone(),
                    reason: e.to_string(),
                })
            }
        };
        // ring, the provider pingora's rustls listener runs on, whatever the process default is.
        let provider = rustls::crypto::ring::default_provider();
        CertifiedKey::from_der(certs, key, &provider).map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => CertError::Mismatch {
                cert: self.cert.clone(),
            },
            other => CertError::UnusableKey(other.to_string()),
        })
    }
}

/// The certificate every handshake of the public listener gets: one key pair for every SNI name
/// (the files decide which names it covers), swapped atomically on reload, so handshakes in
/// progress finish with the pair they started with and new ones get the new pair.
#[derive(Debug)]
pub struct CertResolver {
    current: ArcSwap<CertifiedKey>,
}

impl CertResolver {
    pub fn new(key: CertifiedKey) -> Self {
        CertResolver {
            current: ArcSwap::from_pointee(key),
        }
    }

    pub fn swap(&self, key: CertifiedKey) {
        self.current.store(Arc::new(key));
    }

    /// The leaf certificate served now (tests and logs compare it).
    pub fn leaf(&self) -> Option<CertificateDer<'static>> {
        self.current.load().cert.first().cloned()
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}
