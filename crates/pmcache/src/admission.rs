//! Which connections are served: at most `server.max_connections` at once, at most
//! `server.max_connections_per_client` of them from one client (an IPv4 address, or an IPv6
//! /64), and a reserve of the slots that only `server.trusted_networks` may take, so that one
//! job holding connections open cannot lock out the others, nor the operator and the
//! post-merge runners. A refused connection gets a plain 503 with the reason and is closed.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::ServerConfig;
use crate::network::Network;
use crate::tls::Tls;

/// How long a refused connection may take to receive its 503 and be drained before it is cut.
const REFUSAL_TIME: Duration = Duration::from_secs(2);
/// Bytes of a refused client's request read (and dropped) so that closing does not reset the
/// connection before the client has read the 503.
const REFUSAL_DRAIN: usize = 64 << 10;
/// Refused connections being answered at once; beyond that a flood is cut without a word.
const CONCURRENT_REFUSALS: usize = 64;
/// How often refusals are logged: a flood of them must not flood the log (the metric counts
/// each one).
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);
/// The share of `server.max_connections` kept for trusted networks when some are configured.
const RESERVE_DIVISOR: usize = 8;

/// Why a connection was refused; the `reason` label of `pmcache_connections_refused_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Refused {
    /// Every slot open to this client is taken.
    ServerFull,
    /// This client holds `server.max_connections_per_client` connections already.
    ClientLimit,
}

impl Refused {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Refused::ServerFull => "server_full",
            Refused::ClientLimit => "client_limit",
        }
    }

    fn reason(self, limits: &Limits) -> String {
        match self {
            Refused::ServerFull => format!(
                "pmcache is serving its limit of {} connections (server.max_connections); try again shortly",
                limits.max_connections
            ),
            Refused::ClientLimit => format!(
                "this client already has {} connections open to pmcache (server.max_connections_per_client); close some or try again shortly",
                limits.per_client
            ),
        }
    }
}

/// The numbers refusals name.
#[derive(Clone, Copy)]
struct Limits {
    max_connections: usize,
    per_client: usize,
}

/// A served connection's places: its slot under the server's limit and its count against its
/// client's. Both are given back when it is dropped.
pub(crate) struct Admitted {
    _slot: OwnedSemaphorePermit,
    _client: Option<ClientSlot>,
}

/// One connection counted against a client.
struct ClientSlot {
    clients: Arc<Mutex<HashMap<IpAddr, usize>>>,
    key: IpAddr,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut clients = lock(&self.clients);
        if let Some(count) = clients.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                clients.remove(&self.key);
            }
        }
    }
}

/// Counts connections against the limits of `[server]`.
pub(crate) struct Admission {
    /// Slots anyone may take.
    open: Arc<Semaphore>,
    /// Slots only trusted networks may take, once the open ones are gone.
    reserve: Arc<Semaphore>,
    trusted: Vec<Network>,
    clients: Arc<Mutex<HashMap<IpAddr, usize>>>,
    limits: Limits,
    refusals: Arc<Semaphore>,
    last_logged: Mutex<Option<Instant>>,
}

impl Admission {
    /// Admission under `settings`, whose trusted networks were checked with the config.
    pub(crate) fn new(settings: &ServerConfig) -> anyhow::Result<Admission> {
        let trusted = settings
            .trusted_networks
            .iter()
            .map(|text| Network::parse(text))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let reserve = reserve_for(settings.max_connections, !trusted.is_empty());
        Ok(Admission {
            open: Arc::new(Semaphore::new(settings.max_connections - reserve)),
            reserve: Arc::new(Semaphore::new(reserve)),
            trusted,
            clients: Arc::default(),
            limits: Limits {
                max_connections: settings.max_connections,
                per_client: settings.max_connections_per_client,
            },
            refusals: Arc::new(Semaphore::new(CONCURRENT_REFUSALS)),
            last_logged: Mutex::new(None),
        })
    }

    /// Places for one more connection from `peer`, held until it closes. Clients in a trusted
    /// network are not limited per client (many runners may share one NAT address) and may take
    /// the reserve.
    pub(crate) fn admit(&self, peer: IpAddr) -> Result<Admitted, Refused> {
        if self.trusted.iter().any(|network| network.contains(peer)) {
            let slot = Arc::clone(&self.open)
                .try_acquire_owned()
                .or_else(|_| Arc::clone(&self.reserve).try_acquire_owned())
                .map_err(|_| Refused::ServerFull)?;
            return Ok(Admitted {
                _slot: slot,
                _client: None,
            });
        }
        let key = client_key(peer);
        let mut clients = lock(&self.clients);
        let count = clients.get(&key).copied().unwrap_or(0);
        if count >= self.limits.per_client {
            return Err(Refused::ClientLimit);
        }
        let slot = Arc::clone(&self.open)
            .try_acquire_owned()
            .map_err(|_| Refused::ServerFull)?;
        clients.insert(key, count + 1);
        Ok(Admitted {
            _slot: slot,
            _client: Some(ClientSlot {
                clients: Arc::clone(&self.clients),
                key,
            }),
        })
    }

    /// Answers a refused connection with 503 and `why` (over TLS when `tls` is given) and
    /// closes it, in the background and bounded in time; under a flood of refusals, closes it
    /// at once.
    pub(crate) fn refuse(&self, stream: TcpStream, tls: Option<&Tls>, why: Refused) {
        self.log_refusal(why);
        let Ok(permit) = Arc::clone(&self.refusals).try_acquire_owned() else {
            return;
        };
        let response = refusal_response(&why.reason(&self.limits));
        let acceptor = tls.map(|tls| tls.refusal_acceptor().clone());
        tokio::spawn(async move {
            let refusal = async move {
                match acceptor {
                    None => write_refusal(stream, &response).await,
                    Some(acceptor) => {
                        write_refusal(acceptor.accept(stream).await?, &response).await
                    }
                }
            };
            let _ = tokio::time::timeout(REFUSAL_TIME, refusal).await;
            drop(permit);
        });
    }

    fn log_refusal(&self, why: Refused) {
        let now = Instant::now();
        let mut last = lock(&self.last_logged);
        if last.is_none_or(|at| now.duration_since(at) >= REFUSAL_LOG_EVERY) {
            *last = Some(now);
            tracing::warn!(
                reason = why.as_str(),
                max_connections = self.limits.max_connections,
                max_connections_per_client = self.limits.per_client,
                "refusing connections (counted by reason in pmcache_connections_refused_total; logged at most every 10s)"
            );
        }
    }
}

/// The slots kept for trusted networks: an eighth of the limit, none without trusted networks.
fn reserve_for(max_connections: usize, trusted: bool) -> usize {
    match trusted {
        true => (max_connections / RESERVE_DIVISOR).min(max_connections - 1),
        false => 0,
    }
}

/// The client a peer address counts as: an IPv4 address, or the /64 of an IPv6 one (one host
/// usually has a whole /64 to pick addresses from).
fn client_key(peer: IpAddr) -> IpAddr {
    match peer {
        IpAddr::V4(_) => peer,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
        },
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The whole 503 response refusing a connection for `reason`.
fn refusal_response(reason: &str) -> String {
    format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n{reason}\n",
        reason.len() + 1
    )
}

async fn write_refusal<S>(mut stream: S, response: &str) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await?;
    // Unread request bytes would make the kernel answer our close with a reset, which can
    // destroy the 503 before the client reads it.
    let mut sink = [0u8; 4096];
    let mut drained = 0;
    while drained < REFUSAL_DRAIN {
        match stream.read(&mut sink).await? {
            0 => break,
            read => drained += read,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(max: usize, per_client: usize, trusted: &[&str]) -> Admission {
        let settings = ServerConfig {
            max_connections: max,
            max_connections_per_client: per_client,
            trusted_networks: trusted.iter().map(|text| (*text).to_owned()).collect(),
            ..ServerConfig::default()
        };
        Admission::new(&settings).unwrap()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn the_refusal_is_one_complete_response() {
        let limits = Limits {
            max_connections: 3,
            per_client: 2,
        };
        for why in [Refused::ServerFull, Refused::ClientLimit] {
            let response = refusal_response(&why.reason(&limits));
            let (head, body) = response.split_once("\r\n\r\n").unwrap();
            assert!(head.starts_with("HTTP/1.1 503 "));
            assert!(head.contains("\r\nConnection: close"));
            assert!(head.contains(&format!("\r\nContent-Length: {}", body.len())));
            assert_eq!(body.lines().count(), 1);
        }
        assert!(
            Refused::ClientLimit
                .reason(&limits)
                .contains("server.max_connections_per_client")
        );
        assert!(
            Refused::ServerFull
                .reason(&limits)
                .contains("server.max_connections")
        );
    }

    #[test]
    fn one_client_gets_its_share_and_another_still_gets_in() {
        let admission = admission(10, 2, &[]);
        let first = admission.admit(ip("127.0.0.1")).unwrap();
        let _second = admission.admit(ip("127.0.0.1")).unwrap();
        assert_eq!(
            admission.admit(ip("127.0.0.1")).err(),
            Some(Refused::ClientLimit)
        );
        let _other = admission.admit(ip("127.0.0.2")).unwrap();
        drop(first);
        assert!(
            admission.admit(ip("127.0.0.1")).is_ok(),
            "the place came back"
        );
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64() {
        let admission = admission(10, 1, &[]);
        let _held = admission.admit(ip("2001:db8:1:2::1")).unwrap();
        assert_eq!(
            admission.admit(ip("2001:db8:1:2:ffff::9")).err(),
            Some(Refused::ClientLimit)
        );
        assert!(admission.admit(ip("2001:db8:1:3::1")).is_ok());
        assert_eq!(client_key(ip("::ffff:127.0.0.1")), ip("127.0.0.1"));
    }

    #[test]
    fn trusted_networks_keep_a_reserve_and_no_per_client_limit() {
        let admission = admission(16, 100, &["127.0.0.8/29"]);
        // 16 slots, 2 of them reserved: strangers get 14.
        let strangers: Vec<_> = (0..14)
            .map(|n| admission.admit(ip(&format!("127.0.1.{n}"))).unwrap())
            .collect();
        assert_eq!(
            admission.admit(ip("127.0.2.1")).err(),
            Some(Refused::ServerFull)
        );
        let trusted: Vec<_> = (0..2)
            .map(|_| admission.admit(ip("127.0.0.9")).unwrap())
            .collect();
        assert_eq!(
            admission.admit(ip("127.0.0.9")).err(),
            Some(Refused::ServerFull)
        );
        drop((strangers, trusted));
    }
}
