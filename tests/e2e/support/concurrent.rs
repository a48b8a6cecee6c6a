//! Many GETs sent at once from one tokio client and timed as a batch: to pmcache over plain
//! HTTP/1.1 (a connection per request in flight, as a fleet of clients opens them), or straight to
//! a TLS fixture upstream with HTTP/2 (every request multiplexed on one connection per host, as
//! pmcache and uv talk to a CDN), trusting the tests' CA.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper::header::ACCEPT;
use hyper::{Request, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;

/// How long the whole batch may take before the test fails rather than hangs.
const BATCH_TIMEOUT: Duration = Duration::from_secs(120);

/// One request of a batch.
#[derive(Clone, Debug)]
pub struct Get {
    pub url: String,
    /// The `Accept` header, as the client being imitated sends it.
    pub accept: &'static str,
}

/// How one request of a batch went.
#[derive(Debug)]
pub struct Outcome {
    pub url: String,
    /// None when no response head arrived.
    pub status: Option<u16>,
    pub length: usize,
    /// From the batch's start to the end of this body.
    pub finished: Duration,
    /// Why the exchange failed, if it did (connection, head or body).
    pub error: Option<String>,
}

impl Outcome {
    /// A 200 whose body arrived whole.
    pub fn is_complete_ok(&self) -> bool {
        self.status == Some(200) && self.error.is_none()
    }
}

/// Every request of a batch, in the order given, and how long the batch took.
#[derive(Debug)]
pub struct Batch {
    pub outcomes: Vec<Outcome>,
    pub elapsed: Duration,
}

impl Batch {
    /// The requests that were not a complete 200, one per line, for messages.
    pub fn failures(&self) -> Vec<String> {
        self.outcomes
            .iter()
            .filter(|outcome| !outcome.is_complete_ok())
            .map(|outcome| {
                format!(
                    "{} -> {:?} after {:?} ({} bytes) {}",
                    outcome.url,
                    outcome.status,
                    outcome.finished,
                    outcome.length,
                    outcome.error.as_deref().unwrap_or_default()
                )
            })
            .collect()
    }

    /// The `count` requests that finished last, with their times, for messages.
    pub fn slowest(&self, count: usize) -> Vec<String> {
        let mut outcomes: Vec<&Outcome> = self.outcomes.iter().collect();
        outcomes.sort_by_key(|outcome| std::cmp::Reverse(outcome.finished));
        outcomes
            .iter()
            .take(count)
            .map(|outcome| {
                format!(
                    "{} ({:?}, {} bytes)",
                    outcome.url, outcome.finished, outcome.length
                )
            })
            .collect()
    }

    /// Total body bytes received.
    pub fn bytes(&self) -> usize {
        self.outcomes.iter().map(|outcome| outcome.length).sum()
    }
}

/// Which connections a batch uses.
#[derive(Clone, Copy)]
pub enum Transport<'a> {
    /// Plain `http://` URLs, HTTP/1.1, a connection per request in flight.
    Http1,
    /// `https://` URLs trusting the CA certificates in this PEM file, HTTP/2 only: one
    /// connection per host.
    Http2(&'a Path),
}

/// Sends every one of `gets` at once and waits for all of them to finish (bodies read in full).
pub fn get_all(gets: &[Get], transport: Transport<'_>) -> Result<Batch> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("concurrent-get")
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = client(transport)?;
        let started = Instant::now();
        let tasks: Vec<_> = gets
            .iter()
            .cloned()
            .map(|get| tokio::spawn(fetch(client.clone(), get, started)))
            .collect();
        let mut outcomes = Vec::with_capacity(tasks.len());
        for task in tasks {
            let outcome = tokio::time::timeout_at((started + BATCH_TIMEOUT).into(), task)
                .await
                .with_context(|| format!("the batch took longer than {BATCH_TIMEOUT:?}"))?
                .map_err(|error| anyhow!("a request task failed: {error}"))?;
            outcomes.push(outcome);
        }
        Ok(Batch {
            outcomes,
            elapsed: started.elapsed(),
        })
    })
}

type Https = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

fn client(transport: Transport<'_>) -> Result<Https> {
    let builder = hyper_rustls::HttpsConnectorBuilder::new();
    let connector = match transport {
        Transport::Http1 => builder
            .with_tls_config(client_tls(None)?)
            .https_or_http()
            .enable_http1()
            .build(),
        Transport::Http2(ca) => builder
            .with_tls_config(client_tls(Some(ca))?)
            .https_only()
            .enable_http2()
            .build(),
    };
    let mut client = Client::builder(TokioExecutor::new());
    client.pool_idle_timeout(Duration::from_secs(30));
    if matches!(transport, Transport::Http2(_)) {
        // Known to be HTTP/2 before connecting, so concurrent requests wait for one connection
        // instead of each opening its own.
        client.http2_only(true);
    }
    Ok(client.build(connector))
}

/// A rustls client configuration (ring) trusting only the certificates in `ca_file`, or nothing
/// (plain HTTP only).
fn client_tls(ca_file: Option<&Path>) -> Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(ca_file) = ca_file {
        for certificate in CertificateDer::pem_file_iter(ca_file)
            .with_context(|| format!("reading {}", ca_file.display()))?
        {
            roots.add(certificate?)?;
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// One GET, body read in full.
async fn fetch(client: Https, get: Get, started: Instant) -> Outcome {
    let mut outcome = Outcome {
        url: get.url.clone(),
        status: None,
        length: 0,
        finished: Duration::ZERO,
        error: None,
    };
    if let Err(error) = exchange(&client, &get, &mut outcome).await {
        outcome.error = Some(format!("{error:#}"));
    }
    outcome.finished = started.elapsed();
    outcome
}

async fn exchange(client: &Https, get: &Get, outcome: &mut Outcome) -> Result<()> {
    let uri: Uri = get.url.parse()?;
    let request = Request::get(uri)
        .header(ACCEPT, get.accept)
        .body(Empty::new())?;
    let response = client.request(request).await?;
    outcome.status = Some(response.status().as_u16());
    let mut body = response.into_body();
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame?.data_ref() {
            outcome.length += data.len();
        }
    }
    Ok(())
}
