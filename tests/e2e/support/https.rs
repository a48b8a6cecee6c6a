//! One HTTPS connection to pmcache, kept open across requests: the certificate the server
//! presented, the protocol ALPN chose, and GETs sent on the same connection (so a test can see
//! an open connection outlive a certificate reload).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper::client::conn::{http1, http2};
use hyper::{Request, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;

/// How long connecting, the handshake or one request may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// An open HTTPS connection (HTTP/1.1 or HTTP/2, as ALPN chose).
pub struct HttpsConnection {
    runtime: tokio::runtime::Runtime,
    sender: Sender,
    authority: String,
    /// The server's own certificate, as presented in the handshake.
    pub certificate: CertificateDer<'static>,
    /// What ALPN chose, if anything.
    pub alpn: Option<Vec<u8>>,
}

enum Sender {
    Http1(http1::SendRequest<Empty<Bytes>>),
    Http2(http2::SendRequest<Empty<Bytes>>),
}

/// An answer on the connection.
pub struct Answer {
    pub status: u16,
    pub version: Version,
    pub body: Bytes,
}

impl HttpsConnection {
    /// Connects to `addr` trusting only the CA in `ca_file`, offering `alpn` (e.g. `h2` and
    /// `http/1.1`), with `127.0.0.1` as the server name.
    pub fn open(addr: SocketAddr, ca_file: &Path, alpn: &[&[u8]]) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let config = client_config(ca_file, alpn)?;
        let (sender, certificate, alpn) = runtime.block_on(async {
            tokio::time::timeout(TIMEOUT, connect(addr, config))
                .await
                .with_context(|| format!("connecting to {addr} over TLS took over {TIMEOUT:?}"))?
        })?;
        Ok(Self {
            runtime,
            sender,
            authority: addr.to_string(),
            certificate,
            alpn,
        })
    }

    /// `GET path` on this connection.
    pub fn get(&mut self, path: &str) -> Result<Answer> {
        let url = format!("https://{}{path}", self.authority);
        let (sender, authority) = (&mut self.sender, &self.authority);
        self.runtime.block_on(async {
            tokio::time::timeout(TIMEOUT, async {
                let response = match sender {
                    Sender::Http1(sender) => {
                        sender.ready().await?;
                        let request = Request::get(path)
                            .header(hyper::header::HOST, authority.as_str())
                            .body(Empty::new())?;
                        sender.send_request(request).await?
                    }
                    Sender::Http2(sender) => {
                        sender.ready().await?;
                        let request = Request::get(url.as_str()).body(Empty::new())?;
                        sender.send_request(request).await?
                    }
                };
                let status = response.status().as_u16();
                let version = response.version();
                let body = response.into_body().collect().await?.to_bytes();
                Ok(Answer {
                    status,
                    version,
                    body,
                })
            })
            .await
            .with_context(|| format!("GET {url} took over {TIMEOUT:?}"))?
        })
    }
}

/// A rustls client (ring provider) trusting the CA certificates in `ca_file` only.
fn client_config(ca_file: &Path, alpn: &[&[u8]]) -> Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(ca_file)
        .with_context(|| format!("reading {}", ca_file.display()))?
    {
        roots.add(certificate?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
    Ok(config)
}

type Connected = (Sender, CertificateDer<'static>, Option<Vec<u8>>);

async fn connect(addr: SocketAddr, config: rustls::ClientConfig) -> Result<Connected> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::IpAddress(addr.ip().into());
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .with_context(|| format!("TLS handshake with {addr}"))?;
    let (_, session) = tls.get_ref();
    let Some(certificate) = session.peer_certificates().and_then(|chain| chain.first()) else {
        bail!("{addr} presented no certificate");
    };
    let certificate = certificate.clone().into_owned();
    let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
    let io = TokioIo::new(tls);
    let sender = if alpn.as_deref() == Some(b"h2") {
        let (sender, connection) = http2::handshake(TokioExecutor::new(), io).await?;
        tokio::spawn(connection);
        Sender::Http2(sender)
    } else {
        let (sender, connection) = http1::handshake(io).await?;
        tokio::spawn(connection);
        Sender::Http1(sender)
    };
    Ok((sender, certificate, alpn))
}
