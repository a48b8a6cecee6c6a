//! A proxy on loopback that forwards nothing: clients are configured to send everything that is
//! not for 127.0.0.1 through it, and it records the request line (`CONNECT host:443 HTTP/1.1`,
//! `GET http://host/… HTTP/1.1`) and refuses with 403. A test that checks the trap stayed empty
//! proves that no request left the machine, whatever the network would have allowed.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Result;

/// Hosts clients reach directly; everything else goes to the trap.
const NO_PROXY: &str = "127.0.0.1,localhost";

/// Sends every request `command` makes to a host other than loopback through the trap at
/// `proxy_url`: the `*_PROXY` variables, which npm, yarn, pnpm, RubyGems and Bundler all honour
/// together with `NO_PROXY`.
pub fn route_through_trap(command: &mut Command, proxy_url: &str) {
    for name in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
        command.env(name, proxy_url);
    }
    for name in ["NO_PROXY", "no_proxy"] {
        command.env(name, NO_PROXY);
    }
}

/// The running trap. Dropping it stops its thread.
pub struct EgressTrap {
    addr: SocketAddr,
    caught: Arc<Mutex<Vec<String>>>,
    stopping: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EgressTrap {
    /// Starts the trap on `127.0.0.1:0`.
    pub fn start() -> Result<Self> {
        Self::start_on("127.0.0.1")
    }

    /// Starts the trap on port 0 of `ip`, which must be a loopback address (`127.0.0.2` stands
    /// for "some other machine on the network" in tests of what pmcache refuses to reach).
    pub fn start_on(ip: &str) -> Result<Self> {
        anyhow::ensure!(
            ip.starts_with("127."),
            "traps listen on loopback only, not {ip}"
        );
        let listener = TcpListener::bind((ip, 0))?;
        let addr = listener.local_addr()?;
        let caught = Arc::new(Mutex::new(Vec::new()));
        let stopping = Arc::new(AtomicBool::new(false));
        let thread = {
            let caught = Arc::clone(&caught);
            let stopping = Arc::clone(&stopping);
            std::thread::Builder::new()
                .name("egress-trap".to_owned())
                .spawn(move || {
                    for stream in listener.incoming() {
                        if stopping.load(Ordering::SeqCst) {
                            break;
                        }
                        if let Ok(stream) = stream {
                            let line = refuse(stream);
                            caught
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner)
                                .push(line);
                        }
                    }
                })?
        };
        Ok(Self {
            addr,
            caught,
            stopping,
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:PORT/`, to give clients as their HTTP and HTTPS proxy.
    pub fn proxy_url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// Fails, naming what it caught, if any client tried to leave loopback.
    pub fn ensure_nothing_caught(&self) -> Result<()> {
        let caught = self.caught();
        anyhow::ensure!(
            caught.is_empty(),
            "clients tried to reach hosts off loopback: {caught:?}"
        );
        Ok(())
    }

    /// The request line of every connection caught so far.
    pub fn caught(&self) -> Vec<String> {
        self.caught
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl Drop for EgressTrap {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Reads the request head (bounded in size and time), answers 403 and returns the first line.
fn refuse(mut stream: TcpStream) -> String {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut head = Vec::new();
    let mut buffer = [0u8; 1024];
    while head.len() < 16 * 1024 && !head.windows(4).any(|window| window == b"\r\n\r\n") {
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(read) => head.extend_from_slice(&buffer[..read]),
        }
    }
    let reason = "the e2e egress trap refuses every request that would leave loopback\n";
    let _ = stream.write_all(
        format!(
            "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reason}",
            reason.len()
        )
        .as_bytes(),
    );
    let text = String::from_utf8_lossy(&head);
    let line = text.lines().next().unwrap_or_default().trim();
    if line.is_empty() {
        "<connection without a request line>".to_owned()
    } else {
        line.to_owned()
    }
}
