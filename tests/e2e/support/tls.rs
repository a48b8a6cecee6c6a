//! The tests' own certificate authority and the server certificate it signs for loopback
//! (`127.0.0.1` as an IP SAN, and `localhost`), made with rcgen once per test process; and the
//! rustls server configuration that fixture upstreams serve HTTPS with: ALPN `h2` then
//! `http/1.1`, as the real registries' CDNs offer them. The CA also signs certificates that
//! pmcache itself serves HTTPS with ([`TestCa::issue_server_files`]).

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::fixture_build::load_once;

/// The name of the CA file [`TestCa::write_ca_file`] writes.
const CA_FILE: &str = "test-ca.pem";

/// A CA made for this test process, and a server certificate it signed for loopback.
pub struct TestCa {
    ca: CertifiedIssuer<'static, KeyPair>,
    server_config: Arc<ServerConfig>,
}

/// A loopback certificate and its key as PEM files, for `PMCACHE_TLS_CERT_FILE` and
/// `PMCACHE_TLS_KEY_FILE`.
pub struct ServerFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The certificate as DER: what a client sees as the server's certificate.
    pub der: CertificateDer<'static>,
}

/// The process's test CA, made on first use (key generation takes milliseconds, but every
/// fixture sharing one CA lets a client trust them all with one file).
pub fn test_ca() -> Result<&'static TestCa> {
    static CA: OnceLock<Result<TestCa, String>> = OnceLock::new();
    load_once(&CA, "the test certificate authority", TestCa::generate)
}

impl TestCa {
    fn generate() -> Result<Self> {
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "pmcache e2e test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        validity(&mut ca_params);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)
            .context("self-signing the test CA")?;

        let mut server_params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?;
        server_params
            .distinguished_name
            .push(DnType::CommonName, "pmcache e2e fixture upstream");
        server_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        server_params.use_authority_key_identifier_extension = true;
        validity(&mut server_params);
        let server_key = KeyPair::generate()?;
        let server_cert = server_params
            .signed_by(&server_key, &ca)
            .context("signing the fixture server certificate")?;

        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der()));
        // The chain includes the CA, as servers usually send it; clients anchor on the file.
        let chain = vec![server_cert.der().clone(), CertificateDer::clone(ca.der())];
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut server_config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .context("the fixture server certificate and key do not match")?;
        server_config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            ca,
            server_config: Arc::new(server_config),
        })
    }

    /// Signs a new loopback server certificate named `name` (its common name and a serial of
    /// its own) and writes it and its key to `dir/NAME.cert.pem` and `dir/NAME.key.pem`.
    pub fn issue_server_files(&self, dir: &Path, name: &str) -> Result<ServerFiles> {
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?;
        params
            .distinguished_name
            .push(DnType::CommonName, format!("pmcache e2e {name}"));
        params.serial_number = Some(rcgen::SerialNumber::from_slice(name.as_bytes()));
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        validity(&mut params);
        let key = KeyPair::generate()?;
        let cert = params
            .signed_by(&key, &self.ca)
            .with_context(|| format!("signing the server certificate {name}"))?;
        std::fs::create_dir_all(dir)?;
        let files = ServerFiles {
            cert: dir.join(format!("{name}.cert.pem")),
            key: dir.join(format!("{name}.key.pem")),
            der: cert.der().clone(),
        };
        std::fs::write(&files.cert, cert.pem())?;
        std::fs::write(&files.key, key.serialize_pem())?;
        Ok(files)
    }

    /// Writes the CA certificate as PEM to `dir/test-ca.pem` and returns that path: what
    /// `PMCACHE_UPSTREAM_CA_FILE`, `SSL_CERT_FILE` or `NODE_EXTRA_CA_CERTS` should name.
    pub fn write_ca_file(&self, dir: &Path) -> Result<PathBuf> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(CA_FILE);
        std::fs::write(&path, self.ca.pem())
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// The rustls configuration fixture servers accept TLS with (ring provider, ALPN `h2` and
    /// `http/1.1`).
    pub fn server_config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.server_config)
    }
}

/// A fixed validity window around today, so that certificates are deterministic in shape and
/// valid for every run of this code base.
fn validity(params: &mut CertificateParams) {
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2044, 1, 1);
}
