//! The upstream client's TLS settings: the system's root certificates, plus the PEM roots an
//! operator adds with `upstream.ca_file` (an upstream behind a private CA, or a test CA).

use std::path::Path;

use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;

use crate::error::{Error, Result};

/// A client configuration trusting the system roots and every certificate in `ca_file`.
pub(crate) fn client_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig> {
    let mut roots = system_roots();
    if let Some(path) = ca_file {
        let added = add_pem_roots(&mut roots, path)?;
        tracing::info!(file = %path.display(), certificates = added, "trusting extra upstream roots (upstream.ca_file)");
    }
    if roots.is_empty() {
        return Err(Error::Tls {
            source: "no root certificates: the system has none and upstream.ca_file is unset"
                .into(),
        });
    }
    let provider = rustls::crypto::ring::default_provider();
    let config = rustls::ClientConfig::builder_with_provider(provider.into())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls { source: e.into() })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

/// A certificate in `upstream.ca_file` that rustls will not take as a root.
#[derive(Debug, thiserror::Error)]
#[error("a certificate is unusable as a root")]
struct UnusableRoot(#[source] rustls::Error);

/// The platform's roots; unreadable ones are skipped (a broken bundle must not stop pmcache
/// when `ca_file` alone names the upstream's CA).
fn system_roots() -> RootCertStore {
    let found = rustls_native_certs::load_native_certs();
    for error in &found.errors {
        tracing::warn!(%error, "a system root certificate could not be loaded");
    }
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(found.certs);
    if ignored > 0 {
        tracing::debug!(added, ignored, "system root certificates loaded");
    }
    roots
}

/// Adds every certificate of the PEM file at `path`; an unreadable file, or one without a
/// usable certificate, is an error that names it.
fn add_pem_roots(roots: &mut RootCertStore, path: &Path) -> Result<usize> {
    let bad = |source: crate::error::BoxError| Error::CaFile {
        path: path.to_owned(),
        source,
    };
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(e.into()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.into()))?;
    if certificates.is_empty() {
        return Err(bad("it holds no PEM certificate".into()));
    }
    let count = certificates.len();
    for certificate in certificates {
        roots
            .add(certificate)
            .map_err(|e| bad(Box::new(UnusableRoot(e))))?;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_empty_ca_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let missing = dir.path().join("missing.pem");
        let error = client_config(Some(&missing)).expect_err("missing file");
        assert!(error.to_string().contains("missing.pem"), "{error}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").expect("write");
        let error = client_config(Some(&empty)).expect_err("no certificate");
        let chain = crate::error::chain(&error);
        assert!(
            chain.contains("empty.pem") && chain.contains("no PEM certificate"),
            "{chain}"
        );
    }
}
