//! The control socket: how `pmcache gc` and `pmcache verify` work while `serve` runs.
//!
//! The index admits one process at a time (redb locks its file), so a second process cannot
//! open the store of a running server. `serve` therefore listens on `<data_dir>/control.sock`
//! (mode 0600: only its owner may ask), and the commands send it `POST /gc` or `POST /verify`
//! over HTTP/1.1 and print the JSON report it answers. When no server answers on the socket,
//! the commands open the store themselves.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use pmcache_store::{self as store, Store};
use tokio::net::{UnixListener, UnixStream};

/// The socket's file name in the data directory.
const SOCKET: &str = "control.sock";

/// The socket path of a data directory.
pub(crate) fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET)
}

/// A listening control socket; removed by [`Control::close`].
pub(crate) struct Control {
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

/// What the socket's requests work on.
struct Target {
    store: Store,
    config: store::Config,
}

impl Control {
    /// Listens on the data directory's socket. A socket file left by a process that died is
    /// replaced: the caller holds the store open, so no other server can be using it.
    pub(crate) fn listen(store: Store, config: store::Config) -> anyhow::Result<Control> {
        let path = socket_path(store.root());
        match std::fs::remove_file(&path) {
            Ok(()) => tracing::info!(path = %path.display(), "replaced a stale control socket"),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                return Err(error).with_context(|| format!("cannot remove {}", path.display()));
            }
        }
        let listener = UnixListener::bind(&path)
            .with_context(|| format!("cannot listen on {}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("cannot restrict {}", path.display()))?;
        let target = Arc::new(Target { store, config });
        let task = tokio::spawn(accept(listener, target));
        Ok(Control { path, task })
    }

    /// Stops listening and removes the socket file.
    pub(crate) fn close(self) {
        self.task.abort();
        if let Err(error) = std::fs::remove_file(&self.path)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.path.display(), %error, "could not remove the control socket");
        }
    }
}

async fn accept(listener: UnixListener, target: Arc<Target>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::warn!(%error, "control socket accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let target = Arc::clone(&target);
        let service = service_fn(move |request| {
            let target = Arc::clone(&target);
            async move { Ok::<_, std::convert::Infallible>(answer(&target, request).await) }
        });
        tokio::spawn(async move {
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            if let Err(error) = connection.await {
                tracing::debug!(%error, "control connection ended with an error");
            }
        });
    }
}

async fn answer(target: &Arc<Target>, request: Request<Incoming>) -> Response<Full<Bytes>> {
    if request.method() != Method::POST {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "use POST /gc or POST /verify\n",
        );
    }
    let path = request.uri().path().to_owned();
    let work = Arc::clone(target);
    // Both walk the whole store: off the runtime.
    let outcome = tokio::task::spawn_blocking(move || match path.as_str() {
        "/gc" => Some(
            work.store
                .maintain(&pmcache_proxy::SCHEMA, &work.config)
                .map(|report| serde_json::to_vec(&report)),
        ),
        "/verify" => Some(
            work.store
                .verify(&pmcache_proxy::SCHEMA, true)
                .map(|report| serde_json::to_vec(&report)),
        ),
        _ => None,
    })
    .await;
    match outcome {
        Ok(Some(Ok(Ok(json)))) => {
            let mut response = Response::new(Full::new(Bytes::from(json)));
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            response
        }
        Ok(None) => text(
            StatusCode::NOT_FOUND,
            "no such command; POST /gc or /verify\n",
        ),
        Ok(Some(Err(error))) => {
            tracing::error!(error = %error, "control command failed");
            text(StatusCode::INTERNAL_SERVER_ERROR, &format!("{error}\n"))
        }
        Ok(Some(Ok(Err(error)))) => text(StatusCode::INTERNAL_SERVER_ERROR, &format!("{error}\n")),
        Err(error) => text(StatusCode::INTERNAL_SERVER_ERROR, &format!("{error}\n")),
    }
}

fn text(status: StatusCode, reason: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(reason.to_owned())));
    *response.status_mut() = status;
    response
}

/// Sends `POST command` to the server of `data_dir`; None when no server listens there.
pub(crate) async fn ask(data_dir: &Path, command: &str) -> anyhow::Result<Option<Bytes>> {
    let path = socket_path(data_dir);
    let stream = match UnixStream::connect(&path).await {
        Ok(stream) => stream,
        // No socket, or one a dead process left: nobody is serving this data directory.
        Err(error)
            if matches!(
                error.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None);
        }
        Err(error) => {
            return Err(error).with_context(|| format!("cannot connect to {}", path.display()));
        }
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("control socket handshake failed")?;
    tokio::spawn(connection);
    let request = Request::post(command)
        .header(http::header::HOST, "pmcache")
        .body(Full::new(Bytes::new()))
        .context("building the control request")?;
    let response = sender
        .send_request(request)
        .await
        .with_context(|| format!("the server did not answer {command}"))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .context("reading the server's report")?
        .to_bytes();
    if status != StatusCode::OK {
        bail!(
            "the server answered {status}: {}",
            String::from_utf8_lossy(&body).trim()
        );
    }
    Ok(Some(body))
}
