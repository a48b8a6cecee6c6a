//! The control socket: how `pmcache gc`, `verify` and `purge` work while `serve` runs.
//!
//! The index admits one process at a time (redb locks its file), so a second process cannot
//! open the store of a running server. `serve` therefore listens on `<data_dir>/control.sock`
//! (mode 0600: only its owner may ask), and the commands send it `POST /gc`, `POST /verify` or
//! `POST /purge/ECOSYSTEM/NAME[/VERSION]` over HTTP/1.1 and print the JSON report it answers;
//! the requests run through [`crate::admin`], as the HTTP admin API's do. When no server answers
//! on the socket, the commands open the store themselves.

use std::os::unix::fs::{MetadataExt as _, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{UnixListener, UnixStream};

use crate::admin::{self, Admin};

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

impl Control {
    /// Listens on the data directory's socket. A socket file left by a process that died is
    /// replaced: the caller holds the store open, so no other server can be using it.
    pub(crate) fn listen(admin: Arc<Admin>) -> anyhow::Result<Control> {
        let path = socket_path(admin.store.root());
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
        // The mode is set just after the bind: a peer that connected in between is turned
        // away by its user id, so only the owner of the socket is ever answered.
        let owner = std::fs::metadata(&path)
            .with_context(|| format!("cannot read the owner of {}", path.display()))?
            .uid();
        let task = tokio::spawn(accept(listener, owner, admin));
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

async fn accept(listener: UnixListener, owner: u32, target: Arc<Admin>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::warn!(%error, "control socket accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let peer = stream.peer_cred().map(|credentials| credentials.uid());
        if peer.as_ref().ok() != Some(&owner) {
            tracing::warn!(peer = ?peer, owner, "control socket peer is not its owner; closed");
            continue;
        }
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

async fn answer(admin: &Arc<Admin>, request: Request<Incoming>) -> Response<Full<Bytes>> {
    if request.method() != Method::POST {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "use POST /gc, /verify or /purge/ECOSYSTEM/NAME[/VERSION]\n",
        );
    }
    let outcome = match admin::control_route(request.uri().path()) {
        Ok(command) => admin.run(command).await,
        Err(refusal) => Err(refusal),
    };
    match outcome {
        Ok(json) => {
            let mut response = Response::new(Full::new(Bytes::from(json)));
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            response
        }
        Err(refusal) => text(refusal.status, &format!("{}\n", refusal.reason)),
    }
}

fn text(status: StatusCode, reason: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(reason.to_owned())));
    *response.status_mut() = status;
    response
}

/// The control path of a purge: each part percent-encoded, so that a scoped or vendor name
/// (`@scope/name`, `vendor/name`) and a version with a `/` stay one segment each.
pub(crate) fn purge_path(ecosystem: &str, name: &str, version: Option<&str>) -> String {
    let mut path = format!("/purge/{}/{}", encode(ecosystem), encode(name));
    if let Some(version) = version {
        path.push('/');
        path.push_str(&encode(version));
    }
    path
}

/// Percent-encodes every byte outside RFC 3986's unreserved characters.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(byte).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purge_paths_keep_names_and_versions_one_segment_each() {
        assert_eq!(
            purge_path("npm", "@scope/pkg", Some("1.0.0+build")),
            "/purge/npm/%40scope%2Fpkg/1.0.0%2Bbuild"
        );
        assert_eq!(purge_path("pypi", "demo", None), "/purge/pypi/demo");
        let Ok(admin::Command::Purge(target)) =
            admin::control_route(&purge_path("packagist", "acme/tool", Some("dev-a/b")))
        else {
            panic!("a purge");
        };
        assert_eq!(target.package, "acme/tool");
        assert_eq!(target.version.as_deref(), Some("dev-a/b"));
    }
}
