//! Routes requests to the frontend mounted at their path prefix, turns errors into a status and
//! a one-line reason, and counts and logs every answer.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use pmcache_proxy::{self as proxy, Body, CACHE_HEADER, Caller, Classify, Role};

use crate::admin::{self, Admin};
use crate::auth::{self, Auth, Denied};
use crate::frontend::{Ecosystem, Mount};
use crate::input::{self, Limits};
use crate::metrics::Metrics;
use crate::request_body::{self, Budget};

/// Everything a request can reach.
pub(crate) struct App {
    /// Every ecosystem's frontend: built, off, or still discovering its upstream.
    pub mounts: Vec<(Ecosystem, Mount)>,
    pub metrics: Metrics,
    pub limits: Limits,
    pub auth: Auth,
    /// The admin API (`/admin/…`).
    pub admin: Arc<Admin>,
    /// The bytes of request bodies held at once.
    pub bodies: Budget,
}

impl App {
    /// Answers one request; never fails (errors become responses).
    pub(crate) async fn handle(
        &self,
        request: Request<Incoming>,
    ) -> Result<Response<Body>, Infallible> {
        let started = Instant::now();
        let (mut parts, body) = request.into_parts();
        let path = parts.uri.path().to_owned();
        let mount = Ecosystem::mounted_at(&path);
        let encoded_slash = mount.is_some_and(|(ecosystem, _)| ecosystem.takes_encoded_slash())
            // Scoped npm and Composer names, and versions such as `dev-feature/x`, as one
            // segment each.
            || admin::is_admin_path(&path);
        // Refused before the body is read: hyper drains or closes, bounded by its limits.
        let admitted = match input::check(&parts, &self.limits, encoded_slash) {
            Err(refusal) => Err(text(refusal.status, &refusal.reason)),
            Ok(()) => self
                .authenticate(&path, &parts.headers)
                .map_err(unauthorized),
        };
        let caller = admitted.as_ref().ok().cloned();
        let mut unread = false;
        let checked = match admitted {
            Err(response) => Err(response),
            Ok(caller) => {
                // The one place a request's role is decided: the core reads it back from here.
                parts.extensions.insert(caller);
                // pmcache's own token: relays (npm search and audit, Composer's advisories)
                // would otherwise hand it to the upstream.
                if self.auth.consumes_credentials() {
                    parts.headers.remove(header::AUTHORIZATION);
                }
                let limit =
                    mount.and_then(|(ecosystem, rest)| ecosystem.body_limit(&parts.method, rest));
                unread = request_body::unread(&parts, limit);
                self.bodies
                    .receive(&parts, body, limit, self.limits.body_read_timeout())
                    .await
                    .map_err(|refused| {
                        let mut response = text(refused.status, &refused.reason);
                        if refused.status == StatusCode::SERVICE_UNAVAILABLE {
                            response
                                .headers_mut()
                                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                        }
                        response
                    })
            }
        };
        let (ecosystem, response) = match (mount, checked) {
            (_, Err(response)) => ("none", response),
            (Some((ecosystem, rest)), Ok(body)) => (
                ecosystem.key(),
                self.frontend(ecosystem, &parts, body.bytes.clone(), rest)
                    .await,
            ),
            (None, Ok(_)) if admin::is_admin_path(&path) => {
                ("admin", self.admin.handle(&parts).await)
            }
            (None, Ok(_)) => ("none", self.own_route(&parts.method, &path)),
        };
        let mut response = response;
        if unread {
            // The body was not read: closing is cheaper than waiting for it to drain.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        let cache = response
            .headers()
            .get(CACHE_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none");
        let status = response.status().as_u16();
        let role = caller
            .as_ref()
            .map_or("none", |caller| caller.role.as_str());
        let token = caller.as_ref().and_then(|caller| caller.token.as_deref());
        self.metrics.observe(ecosystem, cache, status, role);
        tracing::info!(
            method = %parts.method, path = %path, status, ecosystem, cache, role, token,
            headers_ms = started.elapsed().as_millis() as u64, "request"
        );
        Ok(response)
    }

    /// The caller a request's credentials make, or why it is refused. `/healthz` is open to
    /// all: liveness probes carry no tokens, and it tells nothing (a caller refused elsewhere is
    /// logged there as read, the least role).
    fn authenticate(&self, path: &str, headers: &http::HeaderMap) -> Result<Caller, Denied> {
        let resolved = self.auth.resolve(headers);
        if path == "/healthz" {
            return Ok(resolved.unwrap_or(Caller::anonymous(Role::Read)));
        }
        resolved
    }

    /// The answer of `ecosystem`'s frontend, its error turned into a response, or 503 while it
    /// is off.
    async fn frontend(
        &self,
        ecosystem: Ecosystem,
        parts: &http::request::Parts,
        body: Bytes,
        rest: &str,
    ) -> Response<Body> {
        let mounted = self.mounts.iter().find(|(each, _)| *each == ecosystem);
        let frontend = match mounted {
            Some((_, mount)) => mount.frontend().await,
            None => Err(format!("the {} frontend was not built", ecosystem.key())),
        };
        match frontend {
            Ok(frontend) => match frontend.handle(parts, body, rest).await {
                Ok(response) => response,
                Err(error) => failure(&*error),
            },
            Err(reason) => text(StatusCode::SERVICE_UNAVAILABLE, &reason),
        }
    }

    fn own_route(&self, method: &http::Method, path: &str) -> Response<Body> {
        let readable = *method == http::Method::GET || *method == http::Method::HEAD;
        if matches!(path, "/healthz" | "/metrics") && !readable {
            let mut response = text(
                StatusCode::METHOD_NOT_ALLOWED,
                &format!("{path} answers GET and HEAD only"),
            );
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return response;
        }
        match path {
            "/healthz" => text(StatusCode::OK, "ok"),
            "/metrics" => {
                let mut response = Response::new(proxy::full(self.metrics.render()));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                response
            }
            _ => text(
                StatusCode::NOT_FOUND,
                &format!(
                    "pmcache has no route {path}: it serves /pypi/simple/, /npm/, /rubygems/, /packagist/, /admin/, /healthz and /metrics"
                ),
            ),
        }
    }
}

/// An error response: the status, `Retry-After` where waiting helps, and the one-line reason.
/// The full error chain goes to the log, never to the client.
fn failure(error: &dyn Classify) -> Response<Body> {
    let status = error.status();
    // The "request" log line `handle` writes next names the method, path and status.
    if status.is_server_error() {
        tracing::warn!(error = %proxy::chain(error), "request failed");
    } else {
        tracing::debug!(error = %proxy::chain(error), "request refused");
    }
    let mut response = text(status, &error.to_string());
    if let Some(after) = error.retry_after() {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(after.as_secs()));
    }
    response
}

/// The 401 for a refused caller, with the challenge that makes pip and Composer send Basic
/// credentials (RFC 9110 §11.6.1: every 401 carries one).
fn unauthorized(denied: Denied) -> Response<Body> {
    let mut response = text(StatusCode::UNAUTHORIZED, denied.reason());
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(auth::CHALLENGE),
    );
    response
}

/// A plain-text answer: `status` and the first line of `reason`.
pub(crate) fn text(status: StatusCode, reason: &str) -> Response<Body> {
    let line = reason.lines().next().unwrap_or("");
    let mut response = Response::new(proxy::full(format!("{line}\n")));
    *response.status_mut() = status;
    if (status.is_client_error() || status.is_server_error())
        && let Some(phrase) = reason_phrase(line)
    {
        response.extensions_mut().insert(phrase);
    }
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// The reason as the HTTP/1 status line's reason phrase: pip, npm, gem and Composer print that
/// phrase (and not the body) when a request fails, so the person reading the CI log sees why.
/// Only visible ASCII and spaces are allowed there; a long reason is cut.
fn reason_phrase(reason: &str) -> Option<hyper::ext::ReasonPhrase> {
    const MAX: usize = 200;
    let phrase: String = reason
        .chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(MAX)
        .collect();
    let phrase = phrase.trim();
    if phrase.is_empty() {
        return None;
    }
    hyper::ext::ReasonPhrase::try_from(phrase.to_owned()).ok()
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use http_body_util::BodyExt as _;
    use pmcache_pypi as pypi;

    use super::*;

    /// Log lines written while a test runs.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn the_log_gets_the_whole_chain_and_the_client_one_line() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused by peer");
        let error = pypi::Error::Proxy(proxy::Error::Connect {
            url: "http://127.0.0.1:9/simple/demo/".to_owned(),
            source: Box::new(refused),
        });
        let log = Captured::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let response = tracing::subscriber::with_default(subscriber, || failure(&error));
        let logged = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
        assert!(
            logged.contains(
                "upstream http://127.0.0.1:9/simple/demo/ could not be reached: refused by peer"
            ),
            "{logged}"
        );
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
        assert!(response.headers().contains_key(header::RETRY_AFTER));
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(
            &body[..],
            b"upstream http://127.0.0.1:9/simple/demo/ could not be reached\n"
        );
    }

    #[test]
    fn error_reasons_ride_in_the_status_line_as_visible_ascii() {
        let response = text(
            StatusCode::FORBIDDEN,
            "not cached: a read token may not fill it\nmore",
        );
        let phrase = response.extensions().get::<hyper::ext::ReasonPhrase>();
        assert_eq!(
            phrase.map(|phrase| phrase.as_bytes()),
            Some(&b"not cached: a read token may not fill it"[..])
        );
        assert!(reason_phrase("caf\u{e9}\u{7}").is_some_and(|phrase| phrase.as_bytes() == b"caf"));
        assert!(reason_phrase(" \u{1b} ").is_none());
        let ok = text(StatusCode::OK, "ok");
        assert!(ok.extensions().get::<hyper::ext::ReasonPhrase>().is_none());
    }
}
