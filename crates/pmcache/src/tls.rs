//! HTTPS on `listen`: the `[tls]` section, the server certificate read from PEM files, the
//! rustls acceptors (ALPN `h2` and `http/1.1`), and the certificate's reload on SIGHUP. A
//! reload changes what the next handshake presents; connections already open keep theirs, and a
//! file that does not load leaves the current certificate in place.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use anyhow::Context;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

/// ALPN protocols offered, in our order of preference (RFC 7301; RFC 9113 §3.2).
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];
/// What the answer to a connection over `server.max_connections` is written in: a plain
/// HTTP/1.1 response, so HTTP/1.1 is the only protocol offered to it.
const REFUSAL_ALPN: [&[u8]; 1] = [b"http/1.1"];

/// The `[tls]` section: both files, or neither (plain HTTP).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct TlsConfig {
    /// PEM file of the server's certificate chain, its own certificate first. Default unset.
    pub cert_file: Option<PathBuf>,
    /// PEM file of the certificate's private key (PKCS#8, PKCS#1 or SEC1). Default unset.
    pub key_file: Option<PathBuf>,
}

impl TlsConfig {
    /// Refuses one file without the other: half a TLS setup must not fall back to plain HTTP.
    pub(crate) fn check(&self) -> anyhow::Result<()> {
        self.files().map(|_| ())
    }

    /// The certificate and key files, when TLS is configured.
    fn files(&self) -> anyhow::Result<Option<Files>> {
        match (&self.cert_file, &self.key_file) {
            (None, None) => Ok(None),
            (Some(cert), Some(key)) => Ok(Some(Files {
                cert: cert.clone(),
                key: key.clone(),
            })),
            (Some(_), None) => anyhow::bail!(
                "tls.cert_file is set but tls.key_file is not: HTTPS needs both (or neither, for plain HTTP)"
            ),
            (None, Some(_)) => anyhow::bail!(
                "tls.key_file is set but tls.cert_file is not: HTTPS needs both (or neither, for plain HTTP)"
            ),
        }
    }
}

#[derive(Clone, Debug)]
struct Files {
    cert: PathBuf,
    key: PathBuf,
}

/// The certificate every new handshake presents, replaced on reload.
#[derive(Debug)]
struct Certificate {
    files: Files,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for Certificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
        Some(Arc::clone(&current))
    }
}

/// TLS for the listener: what accepts connections, and what reloads the certificate.
#[derive(Clone)]
pub(crate) struct Tls {
    certificate: Arc<Certificate>,
    acceptor: TlsAcceptor,
    refusal: TlsAcceptor,
}

impl Tls {
    /// Loads the configured certificate and key; None when `[tls]` is unset.
    pub(crate) fn new(config: &TlsConfig) -> anyhow::Result<Option<Tls>> {
        let Some(files) = config.files()? else {
            return Ok(None);
        };
        // ring only: the workspace builds rustls without aws-lc-rs.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = load(&files, &provider)?;
        let certificate = Arc::new(Certificate {
            files,
            provider: Arc::clone(&provider),
            current: RwLock::new(Arc::new(key)),
        });
        Ok(Some(Tls {
            acceptor: acceptor(&certificate, &provider, &ALPN)?,
            refusal: acceptor(&certificate, &provider, &REFUSAL_ALPN)?,
            certificate,
        }))
    }

    /// Accepts the connections that are served.
    pub(crate) fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }

    /// Accepts a connection over the limit, to tell it so in HTTP/1.1.
    pub(crate) fn refusal_acceptor(&self) -> &TlsAcceptor {
        &self.refusal
    }

    /// Reads the files again; on success new handshakes present the new certificate, else the
    /// current one stays and the reason is logged.
    pub(crate) fn reload(&self) {
        let certificate = &self.certificate;
        match load(&certificate.files, &certificate.provider) {
            Ok(key) => {
                *certificate
                    .current
                    .write()
                    .unwrap_or_else(PoisonError::into_inner) = Arc::new(key);
                tracing::info!(
                    cert_file = %certificate.files.cert.display(),
                    "reloaded the TLS certificate: new connections present it"
                );
            }
            Err(error) => tracing::warn!(
                cert_file = %certificate.files.cert.display(),
                key_file = %certificate.files.key.display(),
                "TLS reload failed, keeping the current certificate: {error:#}"
            ),
        }
    }

    /// Reloads the certificate on every SIGHUP, from now on (the handler is in place when this
    /// returns, so a SIGHUP no longer terminates the process).
    pub(crate) fn reload_on_sighup(&self) -> anyhow::Result<tokio::task::JoinHandle<()>> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangups = signal(SignalKind::hangup()).context("cannot listen for SIGHUP")?;
        let tls = self.clone();
        Ok(tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                let reloading = tls.clone();
                // Reading files blocks: not on the threads that serve requests.
                if let Err(error) = tokio::task::spawn_blocking(move || reloading.reload()).await {
                    tracing::warn!(%error, "TLS reload task failed");
                }
            }
        }))
    }
}

fn acceptor(
    certificate: &Arc<Certificate>,
    provider: &Arc<CryptoProvider>,
    alpn: &[&[u8]],
) -> anyhow::Result<TlsAcceptor> {
    let mut config = ServerConfig::builder_with_provider(Arc::clone(provider))
        .with_safe_default_protocol_versions()
        .context("the TLS provider supports no safe protocol version")?
        .with_no_client_auth()
        .with_cert_resolver(Arc::clone(certificate) as Arc<dyn ResolvesServerCert>);
    config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The certificate chain and key in `files`, checked to belong together.
fn load(files: &Files, provider: &CryptoProvider) -> anyhow::Result<CertifiedKey> {
    let chain = read_chain(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).with_context(|| {
        format!(
            "tls.key_file {} holds no readable PEM private key",
            files.key.display()
        )
    })?;
    CertifiedKey::from_der(chain, key, provider).with_context(|| {
        format!(
            "tls.key_file {} is not a usable key for the certificate in tls.cert_file {}",
            files.key.display(),
            files.cert.display()
        )
    })
}

fn read_chain(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let what = || {
        format!(
            "tls.cert_file {} is not a readable PEM file",
            path.display()
        )
    };
    let chain = CertificateDer::pem_file_iter(path)
        .with_context(what)?
        .collect::<Result<Vec<_>, _>>()
        .with_context(what)?;
    anyhow::ensure!(
        !chain.is_empty(),
        "tls.cert_file {} holds no certificate",
        path.display()
    );
    Ok(chain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_files_or_neither() {
        let neither = TlsConfig::default();
        assert!(neither.files().unwrap().is_none());
        let half = TlsConfig {
            cert_file: Some(PathBuf::from("cert.pem")),
            key_file: None,
        };
        assert!(format!("{:#}", half.check().unwrap_err()).contains("tls.key_file"));
        let other_half = TlsConfig {
            cert_file: None,
            key_file: Some(PathBuf::from("key.pem")),
        };
        assert!(format!("{:#}", other_half.check().unwrap_err()).contains("tls.cert_file"));
    }

    #[test]
    fn unreadable_files_are_an_error_naming_them() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        std::fs::write(&cert, "not pem").unwrap();
        let config = TlsConfig {
            cert_file: Some(cert),
            key_file: Some(dir.path().join("missing.pem")),
        };
        let error = format!("{:#}", Tls::new(&config).err().unwrap());
        assert!(error.contains("cert.pem"), "{error}");
    }
}
