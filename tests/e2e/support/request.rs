//! One arbitrary HTTP/1.1 request on its own connection, for what [`super::http`]'s GETs cannot
//! express: any method, a request body, and a `Host` header other than the address connected to.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::header::HOST;
use hyper::{Method, Uri};
use hyper_util::rt::TokioIo;

use super::http::Response;

/// How long one request may take, body included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Sends `method url` with `headers` and `body`, connecting to the URL's address. A `host`
/// header in `headers` replaces the one taken from the URL. The body is collected; one that
/// breaks off is reported in [`Response::body_error`].
pub fn send(method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> Result<Response> {
    let uri: Uri = url.parse().with_context(|| format!("bad URL {url}"))?;
    if uri.scheme_str() != Some("http") {
        bail!("only http:// URLs are supported: {url}");
    }
    let authority = uri
        .authority()
        .with_context(|| format!("no host in {url}"))?
        .clone();
    let path = uri
        .path_and_query()
        .map_or("/", |path| path.as_str())
        .to_owned();
    let host = headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("host"))
        .map_or(authority.as_str(), |(_, value)| *value)
        .to_owned();
    let mut request = hyper::Request::builder()
        .method(Method::from_bytes(method.as_bytes())?)
        .uri(path)
        .header(HOST, host);
    for (name, value) in headers
        .iter()
        .filter(|(name, _)| !name.eq_ignore_ascii_case("host"))
    {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(Bytes::copy_from_slice(body)))?;
    let description = format!("{method} {url}");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let exchange = async {
            let port = authority.port_u16().unwrap_or(80);
            let stream = tokio::net::TcpStream::connect((authority.host(), port))
                .await
                .with_context(|| format!("connecting to {authority}"))?;
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            let driver = tokio::spawn(connection);
            let response = sender
                .send_request(request)
                .await
                .with_context(|| format!("{description}: no response"))?;
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let mut body = response.into_body();
            let mut collected = Vec::new();
            let mut body_error = None;
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(frame) => {
                        if let Some(data) = frame.data_ref() {
                            collected.extend_from_slice(data);
                        }
                    }
                    Err(error) => {
                        body_error = Some(format!("{error:?}"));
                        break;
                    }
                }
            }
            driver.abort();
            anyhow::Ok(Response {
                status,
                headers,
                body: Bytes::from(collected),
                body_error,
            })
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .with_context(|| format!("{description} took longer than {REQUEST_TIMEOUT:?}"))?
    })
}
