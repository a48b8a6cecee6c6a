//! HTTP/1.1 spoken byte for byte over a `TcpStream`: for requests that real clients (and
//! hyper's client) would normalise or refuse to send, such as `..` segments, raw backslashes or
//! over-long heads, and for clients that trickle or never finish their request.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

/// How long one exchange may take before the test fails rather than hangs.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(20);

/// A response as it arrived.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    /// `(lowercase name, value)` in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Fails unless this is a `text/plain` answer with exactly one line of reason.
    pub fn ensure_one_line_reason(&self, what: &str) -> Result<()> {
        let content_type = self.header("content-type").unwrap_or_default();
        ensure!(
            content_type.starts_with("text/plain"),
            "{what}: HTTP {} with content type {content_type:?}, not text/plain: {:?}",
            self.status,
            self.text()
        );
        let text = self.text();
        ensure!(
            text.ends_with('\n') && text.trim_end().lines().count() == 1 && text.trim().len() > 10,
            "{what}: the reason is not one line: {text:?}"
        );
        Ok(())
    }
}

/// Sends `GET target` with `headers` and `Connection: close`, and reads the whole answer.
pub fn get(addr: SocketAddr, target: &str, headers: &[(&str, &str)]) -> Result<RawResponse> {
    let mut head = format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    exchange(addr, head.as_bytes())
}

/// Like [`get`], for requests the server may cut off while they are still being sent: None
/// when the connection ended (or was reset) without a response head.
pub fn attempt(
    addr: SocketAddr,
    target: &str,
    headers: &[(&str, &str)],
) -> Result<Option<RawResponse>> {
    let mut head = format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(EXCHANGE_TIMEOUT))?;
    // The server may stop reading and close: a failed write is not the test's failure.
    let _ = stream.write_all(head.as_bytes());
    let received = read_to_close(&mut stream)?;
    if received.is_empty() {
        return Ok(None);
    }
    parse(&received).map(Some)
}

/// Sends `request` as is and reads the answer until the server closes the connection.
pub fn exchange(addr: SocketAddr, request: &[u8]) -> Result<RawResponse> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(EXCHANGE_TIMEOUT))?;
    stream.write_all(request)?;
    let received = read_to_close(&mut stream)
        .with_context(|| format!("reading the answer to {:?}", preview(request)))?;
    parse(&received).with_context(|| {
        format!(
            "the answer to {:?} was {:?}",
            preview(request),
            preview(&received)
        )
    })
}

/// Reads one response with a `Content-Length` from a connection that stays open.
pub fn read_one(stream: &mut TcpStream) -> Result<RawResponse> {
    let deadline = Instant::now() + EXCHANGE_TIMEOUT;
    let mut received = Vec::new();
    let mut buffer = [0u8; 16 * 1024];
    loop {
        if let Some(complete) = complete_length(&received) {
            return parse(&received[..complete]);
        }
        ensure!(
            Instant::now() < deadline,
            "no complete response within {EXCHANGE_TIMEOUT:?}"
        );
        match stream.read(&mut buffer)? {
            0 => bail!("the connection closed after {} bytes", received.len()),
            read => received.extend_from_slice(&buffer[..read]),
        }
    }
}

/// The length of the first response in `received` once it has all arrived (by its
/// `Content-Length`, or none: no body).
fn complete_length(received: &[u8]) -> Option<usize> {
    let end = received
        .windows(4)
        .position(|window| window == b"\r\n\r\n")?
        + 4;
    let head = String::from_utf8_lossy(&received[..end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|value| value.trim().parse::<usize>().ok())
        .unwrap_or(0);
    (received.len() >= end + length).then_some(end + length)
}

/// Everything the server sends until it closes (or resets) the connection.
pub fn read_to_close(stream: &mut TcpStream) -> Result<Vec<u8>> {
    let deadline = Instant::now() + EXCHANGE_TIMEOUT;
    let mut received = Vec::new();
    let mut buffer = [0u8; 16 * 1024];
    loop {
        ensure!(
            Instant::now() < deadline,
            "the server kept the connection open for {EXCHANGE_TIMEOUT:?}"
        );
        match stream.read(&mut buffer) {
            Ok(0) => return Ok(received),
            Ok(read) => received.extend_from_slice(&buffer[..read]),
            // A reset after a complete answer still leaves the answer.
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => {
                return Ok(received);
            }
            Err(error) => return Err(error.into()),
        }
    }
}

/// Parses one HTTP/1.1 response (body by `Content-Length`, chunks, or to the end).
pub fn parse(received: &[u8]) -> Result<RawResponse> {
    let end = received
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .context("no complete response head")?;
    let head = std::str::from_utf8(&received[..end])?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let rest = &received[end + 4..];
    let chunked = headers
        .iter()
        .any(|(name, value)| name == "transfer-encoding" && value.contains("chunked"));
    let body = if chunked {
        dechunk(rest)?
    } else {
        rest.to_vec()
    };
    let response = RawResponse {
        status,
        headers,
        body,
    };
    if let Some(length) = response.header("content-length") {
        let length: usize = length.parse()?;
        ensure!(
            response.body.len() == length,
            "Content-Length {length} but {} bytes of body",
            response.body.len()
        );
    }
    Ok(response)
}

fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = rest
            .windows(2)
            .position(|window| window == b"\r\n")
            .context("unterminated chunk size")?;
        let size_text = std::str::from_utf8(&rest[..line_end])?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        if rest.len() < size + 2 {
            bail!("a chunk of {size} bytes broke off");
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

fn preview(bytes: &[u8]) -> String {
    let mut text = String::from_utf8_lossy(bytes).into_owned();
    if text.len() > 300 {
        text.truncate(text.floor_char_boundary(300));
        text.push('…');
    }
    text
}
