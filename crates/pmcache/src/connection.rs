//! One admitted TCP connection (see `admission`): the TLS handshake when `[tls]` is set, the
//! HTTP/1 or HTTP/2 choice (from ALPN over TLS, else from the first bytes) within the header
//! timeout, and hyper serving it with the configured limits.

use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulConnection, Watcher};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::server::TlsStream;

use crate::admission::Admitted;
use crate::config::ServerConfig;
use crate::forwarded::Hop;
use crate::idle::Activity;
use crate::router::App;
use crate::tls::Tls;

/// What an HTTP/2 client sends first (RFC 9113 §3.4); anything else is HTTP/1.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Room in hyper's read buffer for the request line's method and version beyond the limits.
const HEAD_SLACK: usize = 4 << 10;
/// How often an HTTP/2 connection is pinged, and how long its answer may take.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// How long an idle connection being shut down gracefully may take to close: an HTTP/2 peer
/// must answer the shutdown's ping, one round trip.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// How often a connection that sent part of the HTTP/2 preface is looked at again.
const PREFACE_POLL: Duration = Duration::from_millis(10);

/// The protocol a connection speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Protocol {
    Http1,
    Http2,
}

/// Which protocol the bytes a client sent so far show; None while they are a proper prefix of
/// the HTTP/2 preface.
fn protocol_of(first: &[u8]) -> Option<Protocol> {
    let seen = first.len().min(H2_PREFACE.len());
    if first[..seen] != H2_PREFACE[..seen] {
        Some(Protocol::Http1)
    } else if seen == H2_PREFACE.len() {
        Some(Protocol::Http2)
    } else {
        None
    }
}

/// Waits for enough of the client's first bytes to tell the protocol. None when the client
/// closed first. A client that sends nothing is held only as long as the caller's timeout: this
/// wait comes before hyper's own header timeout starts.
async fn sniff(stream: &TcpStream) -> std::io::Result<Option<Protocol>> {
    let mut first = [0u8; H2_PREFACE.len()];
    loop {
        let seen = stream.peek(&mut first).await?;
        if seen == 0 {
            return Ok(None);
        }
        if let Some(protocol) = protocol_of(&first[..seen]) {
            return Ok(Some(protocol));
        }
        // Part of the preface: peek would answer at once with the same bytes, so wait a little.
        tokio::time::sleep(PREFACE_POLL).await;
    }
}

/// hyper's connection builders with the limits of `[server]`.
pub(crate) struct Protocols {
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
    header_read_timeout: Duration,
    idle_timeout: Duration,
}

impl Protocols {
    pub(crate) fn new(settings: &ServerConfig) -> Protocols {
        let uri = usize::try_from(settings.max_uri_length.0).unwrap_or(usize::MAX);
        let headers = usize::try_from(settings.max_header_size.0).unwrap_or(usize::MAX);
        // hyper's own limits sit above ours, so that the router answers requests just over
        // them with a reason; these only stop what would not even fit the buffer.
        let head = uri.saturating_add(headers).saturating_add(HEAD_SLACK);
        let mut http1 = http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            // A client that half-closes after sending its request (`shutdown(SHUT_WR)`, as
            // some scripts and proxies do) still gets its answer.
            .half_close(true)
            .header_read_timeout(settings.header_read_timeout)
            .max_headers(settings.max_headers)
            .max_header_size(head)
            // hyper requires at least 8 KiB.
            .max_buf_size(head.max(8 << 10));
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(head).unwrap_or(u32::MAX))
            .max_concurrent_streams(settings.max_concurrent_streams)
            // A peer that stops answering pings is gone: its place is freed without waiting
            // for the idle timeout (which a connection with a stuck stream never reaches).
            .keep_alive_interval(KEEP_ALIVE_INTERVAL)
            .keep_alive_timeout(KEEP_ALIVE_TIMEOUT);
        Protocols {
            http1,
            http2,
            header_read_timeout: settings.header_read_timeout,
            idle_timeout: settings.idle_timeout,
        }
    }
}

/// What a connection needs from the server beyond its socket.
pub(crate) struct Context {
    pub protocols: Arc<Protocols>,
    pub app: Arc<App>,
    /// Watches the connection once hyper serves it, for a graceful shutdown.
    pub watcher: Watcher,
    /// Changes (its sender is dropped) when the server stops: a connection that has not sent
    /// its first bytes yet is closed then rather than waited for.
    pub stopping: watch::Receiver<()>,
    /// The handshake to make first, when pmcache serves HTTPS.
    pub tls: Option<Tls>,
    /// The peer is in `server.trusted_proxies`: its forwarding fields are believed.
    pub from_proxy: bool,
}

/// A connection ready for its first request, and the protocol it speaks.
enum Opened {
    Plain(TcpStream, Protocol),
    Tls(Box<TlsStream<TcpStream>>, Protocol),
}

/// Serves one admitted connection until it closes; `permit` is its place under the limit.
pub(crate) async fn serve(stream: TcpStream, permit: Admitted, context: Context) {
    let Context {
        protocols,
        app,
        watcher,
        mut stopping,
        tls,
        from_proxy,
    } = context;
    let _open = app.metrics.connection_opened();
    // The handshake counts against the header timeout too: a client that opens a connection
    // and then says nothing is dropped alike, in plain text or TLS.
    let opened = tokio::select! {
        opened = tokio::time::timeout(protocols.header_read_timeout, open(stream, tls.as_ref())) => opened,
        _ = stopping.changed() => return,
    };
    let opened = match opened {
        Ok(Ok(Some(opened))) => opened,
        Ok(Ok(None)) => return,
        Ok(Err(error)) => {
            tracing::debug!(%error, "connection failed before its first request");
            return;
        }
        Err(_) => {
            tracing::debug!("client sent nothing within the header timeout; closing");
            return;
        }
    };
    let result = match opened {
        Opened::Plain(stream, protocol) => {
            let hop = Hop {
                from_proxy,
                tls: false,
            };
            serve_http(
                TokioIo::new(stream),
                protocol,
                &protocols,
                (watcher, stopping),
                app,
                hop,
            )
            .await
        }
        Opened::Tls(stream, protocol) => {
            let hop = Hop {
                from_proxy,
                tls: true,
            };
            serve_http(
                TokioIo::new(stream),
                protocol,
                &protocols,
                (watcher, stopping),
                app,
                hop,
            )
            .await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%error, "connection ended with an error");
    }
    drop(permit);
}

/// Makes the TLS handshake, if any, and tells the protocol: by ALPN over TLS (HTTP/2 over TLS
/// needs it, RFC 9113 §3.2), else from the first bytes. None when the client closed first.
async fn open(stream: TcpStream, tls: Option<&Tls>) -> std::io::Result<Option<Opened>> {
    let Some(tls) = tls else {
        return Ok(sniff(&stream)
            .await?
            .map(|protocol| Opened::Plain(stream, protocol)));
    };
    let stream = tls.acceptor().accept(stream).await?;
    let protocol = match stream.get_ref().1.alpn_protocol() {
        Some(b"h2") => Protocol::Http2,
        _ => Protocol::Http1,
    };
    Ok(Some(Opened::Tls(Box::new(stream), protocol)))
}

/// hyper serving `io` in `protocol` until the connection closes; `hop` says how it reached
/// pmcache.
async fn serve_http<I>(
    io: I,
    protocol: Protocol,
    protocols: &Protocols,
    (watcher, stopping): (Watcher, watch::Receiver<()>),
    app: Arc<App>,
    hop: Hop,
) -> Result<(), hyper::Error>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let activity = Activity::new();
    let tracked = Arc::clone(&activity);
    let service = service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
        // Before anything reads the request: what it says about its origin is settled here.
        hop.settle(request.headers_mut());
        let app = Arc::clone(&app);
        let busy = tracked.begin();
        async move {
            let response = app.handle(request).await?;
            Ok::<_, std::convert::Infallible>(Activity::until_sent(busy, response))
        }
    });
    // The watcher is held, not used: while it lives the server's graceful shutdown waits for
    // this connection, and `stopping` tells when to close it.
    let _watcher = watcher;
    match protocol {
        Protocol::Http1 => {
            let connection = protocols.http1.serve_connection(io, service);
            drive(connection, &activity, protocols.idle_timeout, stopping).await
        }
        Protocol::Http2 => {
            let connection = protocols.http2.serve_connection(io, service);
            drive(connection, &activity, protocols.idle_timeout, stopping).await
        }
    }
}

/// Serves `connection` until it ends, shutting it down gracefully (HTTP/2: `GOAWAY`, so a
/// client knows which requests were not taken and may send them again; HTTP/1: closed between
/// requests) when it has been idle for `idle_timeout` or the server stops. A client that does
/// not play its part in the shutdown (the peer must answer a ping) is dropped once the
/// connection has been idle for [`CLOSE_GRACE`] more; a request it sent before it saw the
/// `GOAWAY` is answered first.
async fn drive<C>(
    connection: C,
    activity: &Activity,
    idle_timeout: Duration,
    mut stopping: watch::Receiver<()>,
) -> Result<(), hyper::Error>
where
    C: GracefulConnection<Error = hyper::Error>,
{
    tokio::pin!(connection);
    let mut stopping_seen = false;
    let mut closing_idle = false;
    let mut grace: Option<tokio::time::Instant> = None;
    loop {
        let deadline = grace;
        let grace_over = async move {
            match deadline {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            // A request that arrives as the deadline passes is served, not dropped.
            biased;
            result = connection.as_mut() => return result,
            _ = stopping.changed(), if !stopping_seen => {
                stopping_seen = true;
                connection.as_mut().graceful_shutdown();
            }
            () = activity.idle_for(idle_timeout), if !closing_idle => {
                tracing::debug!(timeout = ?idle_timeout, "closing an idle connection");
                closing_idle = true;
                grace = Some(tokio::time::Instant::now() + CLOSE_GRACE);
                connection.as_mut().graceful_shutdown();
            }
            () = grace_over => {
                if activity.is_busy() {
                    grace = Some(tokio::time::Instant::now() + CLOSE_GRACE);
                    continue;
                }
                tracing::debug!("an idle connection did not close in time; dropping it");
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_bytes_tell_the_protocol() {
        assert_eq!(protocol_of(b"GET / HTTP/1.1\r\n"), Some(Protocol::Http1));
        assert_eq!(protocol_of(b"P"), None);
        assert_eq!(protocol_of(b"PRI * HTTP/2.0"), None);
        assert_eq!(protocol_of(b"PUT /x HTTP/1.1"), Some(Protocol::Http1));
        assert_eq!(protocol_of(H2_PREFACE), Some(Protocol::Http2));
    }

    /// One HTTP/2 frame: type, flags, stream id and payload.
    async fn read_frame(io: &mut tokio::io::DuplexStream) -> Option<(u8, u8, u32, Vec<u8>)> {
        use tokio::io::AsyncReadExt as _;
        let mut head = [0u8; 9];
        io.read_exact(&mut head).await.ok()?;
        let length = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; length];
        io.read_exact(&mut payload).await.ok()?;
        Some((head[3], head[4], stream, payload))
    }

    /// A client that opens a stream after the idle shutdown's `GOAWAY` (as one that had not
    /// read it yet would) and never answers the shutdown's ping still gets its answer, though
    /// it takes longer than the close grace: the connection is dropped only once idle.
    #[tokio::test(start_paused = true)]
    async fn a_request_sent_during_an_idle_shutdown_is_answered() {
        use tokio::io::AsyncWriteExt as _;
        const GOAWAY: u8 = 0x7;
        const HEADERS: u8 = 0x1;
        const DATA: u8 = 0x0;
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let activity = Activity::new();
        let tracked = Arc::clone(&activity);
        let service = service_fn(move |_request: hyper::Request<hyper::body::Incoming>| {
            let busy = tracked.begin();
            async move {
                // Longer than the close grace.
                tokio::time::sleep(CLOSE_GRACE * 4).await;
                let body = http_body_util::Full::new(bytes::Bytes::from_static(b"done"));
                drop(busy);
                Ok::<_, std::convert::Infallible>(hyper::Response::new(body))
            }
        });
        let protocols = Protocols::new(&ServerConfig::default());
        let connection = protocols
            .http2
            .serve_connection(TokioIo::new(server), service);
        let (_stop, stopping) = watch::channel(());
        let idle = Duration::from_secs(2);
        let served =
            tokio::spawn(async move { drive(connection, &activity, idle, stopping).await });

        client.write_all(H2_PREFACE).await.unwrap();
        client
            .write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0])
            .await
            .unwrap();
        loop {
            let (kind, _, _, _) = read_frame(&mut client)
                .await
                .expect("a GOAWAY at the idle timeout");
            if kind == GOAWAY {
                break;
            }
        }
        // HEADERS on stream 1, END_STREAM | END_HEADERS: GET http://localhost/ (HPACK static
        // entries for the method, scheme and path; the authority a literal).
        let mut block = vec![0x82, 0x86, 0x84, 0x41, 9];
        block.extend_from_slice(b"localhost");
        let mut frame = vec![0, 0, block.len() as u8, HEADERS, 0x5, 0, 0, 0, 1];
        frame.extend_from_slice(&block);
        client.write_all(&frame).await.unwrap();
        let mut answered = Vec::new();
        while let Some((kind, _, stream, payload)) = read_frame(&mut client).await {
            if stream == 1 && (kind == HEADERS || kind == DATA) {
                answered.push((kind, payload));
            }
        }
        assert!(
            answered.iter().any(|(kind, _)| *kind == HEADERS),
            "the connection closed before the answer"
        );
        assert!(
            answered
                .iter()
                .any(|(kind, payload)| *kind == DATA && payload == b"done"),
            "no body in {answered:?}"
        );
        served.await.unwrap().unwrap();
    }
}
