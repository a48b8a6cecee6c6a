//! `pmcache serve`: opens the store, builds the frontends, listens (over TLS when `[tls]` is
//! set, reloading the certificate on SIGHUP), and shuts down gracefully on SIGTERM or Ctrl-C
//! (in-flight requests get a grace period; batched bookkeeping is flushed).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hyper_util::server::graceful::GracefulShutdown;
use pmcache_proxy::Proxy;
use pmcache_store::Store;
use tokio::net::TcpListener;

use crate::admin::Admin;
use crate::admission::Admission;
use crate::auth::Auth;
use crate::config::{Config, ServerConfig};
use crate::connection::{self, Protocols};
use crate::control::Control;
use crate::forwarded::TrustedProxies;
use crate::frontend::{Ecosystem, Frontend};
use crate::input::Limits;
use crate::metrics::Metrics;
use crate::request_body::Budget;
use crate::router::App;
use crate::tls::Tls;

/// How long in-flight requests may run on after a shutdown signal.
const GRACE: Duration = Duration::from_secs(10);
/// How often batched last-access times are written to the index.
const FLUSH_EVERY: Duration = Duration::from_secs(5);
/// The least time between two maintenance passes, however fast commits go over the cap.
const MAINTAIN_GAP: Duration = Duration::from_secs(1);

pub(crate) async fn serve(config: Config) -> anyhow::Result<()> {
    let store = Store::open(&config.data_dir).with_context(|| {
        format!(
            "cannot open the data directory {}",
            config.data_dir.display()
        )
    })?;
    store.set_max_size(config.storage.max_size);
    // Before anything listens: a certificate that does not load stops the start.
    let tls = Tls::new(&config.tls)?;
    let admission = Admission::new(&config.server)?;
    let proxies = TrustedProxies::new(&config.server)?;
    let proxy = Proxy::new(store.clone(), &config.upstream)?;
    proxy.set_read_misses(config.auth.read_misses);
    let policy = config.policy()?;
    // A route's upstream is configured like a frontend's: it may be on a private address.
    for route in policy.routes() {
        if let pmcache_policy::Upstream::Url(url) = route.upstream() {
            proxy.trust_route(url);
        }
    }
    proxy.set_policy(policy);
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let local = listener.local_addr()?;
    crate::frontend::check_routes_are_not_self(&config, local)?;
    let mut mounts = Vec::with_capacity(Ecosystem::ALL.len());
    for ecosystem in Ecosystem::ALL {
        mounts.push((
            ecosystem,
            Frontend::mount(ecosystem, &config, &proxy, local)?,
        ));
    }
    let admin = Arc::new(Admin {
        proxy: proxy.clone(),
        store: store.clone(),
        storage: config.storage.clone(),
    });
    let app = Arc::new(App {
        mounts,
        metrics: Metrics::new(store.clone(), proxy.clone()),
        limits: Limits::new(&config.server),
        auth: Auth::new(&config.auth)?,
        admin: Arc::clone(&admin),
        bodies: Budget::new(),
    });
    let flusher = tokio::spawn(flush_periodically(proxy.clone()));
    let maintainer = tokio::spawn(maintain_periodically(store.clone(), config.storage.clone()));
    // Without the socket, `pmcache gc|verify|purge` cannot reach this server: worth a line,
    // not an exit.
    let control = Control::listen(admin)
        .inspect_err(|error| tracing::error!("no control socket: {error:#}"))
        .ok();
    // Only with TLS: without it, SIGHUP keeps its default meaning (terminate), as before.
    let reloader = tls.as_ref().map(Tls::reload_on_sighup).transpose()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    if tokens_in_clear(tls.is_some(), !config.auth.tokens.is_empty(), local.ip()) {
        tracing::warn!(
            %local,
            "tokens are configured but pmcache serves plain HTTP beyond loopback: clients send them \
             readable to anyone on the path; set [tls] cert_file and key_file, or listen on loopback \
             behind a TLS proxy"
        );
    }
    // The first line on stdout tells scripts and tests where pmcache listens (port 0 picks one).
    println!("pmcache listening on {scheme}://{local}");
    tracing::info!(%local, %scheme, data_dir = %config.data_dir.display(), "serving");
    let gate = Gate {
        admission,
        proxies,
        tls,
    };
    accept_until_shutdown(listener, app, &config.server, gate).await;
    if let Some(reloader) = reloader {
        reloader.abort();
    }
    flusher.abort();
    maintainer.abort();
    if let Some(control) = control {
        control.close();
    }
    proxy.flush()?;
    tracing::info!("stopped");
    Ok(())
}

/// What every accepted connection passes through before hyper serves it.
struct Gate {
    admission: Admission,
    proxies: TrustedProxies,
    tls: Option<Tls>,
}

async fn accept_until_shutdown(
    listener: TcpListener,
    app: Arc<App>,
    settings: &ServerConfig,
    gate: Gate,
) {
    let Gate {
        admission,
        proxies,
        tls,
    } = gate;
    let graceful = GracefulShutdown::new();
    let protocols = Arc::new(Protocols::new(settings));

    // Dropping the sender tells connections still waiting for their first bytes to close.
    let (stop_sender, stop_signal) = tokio::sync::watch::channel(());
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // Answers are written whole (headers and small bodies in one write): Nagle's
                // algorithm would only hold the last segment of each for the client's delayed
                // ACK, about 40 ms per small answer.
                if let Err(error) = stream.set_nodelay(true) {
                    tracing::debug!(%error, "could not set TCP_NODELAY");
                }
                let permit = match admission.admit(peer.ip()) {
                    Ok(permit) => permit,
                    Err(why) => {
                        app.metrics.connection_refused(why);
                        admission.refuse(stream, tls.as_ref(), why);
                        continue;
                    }
                };
                let context = connection::Context {
                    protocols: Arc::clone(&protocols),
                    app: Arc::clone(&app),
                    watcher: graceful.watcher(),
                    stopping: stop_signal.clone(),
                    tls: tls.clone(),
                    from_proxy: proxies.trusts(peer.ip()),
                };
                tokio::spawn(connection::serve(stream, permit, context));
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    drop(stop_sender);
    tracing::info!("shutting down: no new connections, finishing in-flight requests");
    if tokio::time::timeout(GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(grace = ?GRACE, "in-flight requests did not finish in time");
    }
}

async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = terminate => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

async fn flush_periodically(proxy: Proxy) {
    let mut interval = tokio::time::interval(FLUSH_EVERY);
    loop {
        interval.tick().await;
        let flushing = proxy.clone();
        match tokio::task::spawn_blocking(move || flushing.flush()).await {
            Ok(Ok(())) => {}
            // A full disk is reported once by the store, not every few seconds here.
            Ok(Err(error)) if error.is_storage_full() => {
                tracing::debug!(%error, "could not record access times");
            }
            Ok(Err(error)) => tracing::warn!(%error, "could not record access times"),
            Err(error) => tracing::warn!(%error, "access-time flush task failed"),
        }
    }
}

/// Runs eviction and garbage collection every `gc_interval`, and as soon as commits take the
/// store over its cap (at most once per [`MAINTAIN_GAP`]).
async fn maintain_periodically(store: Store, config: pmcache_store::Config) {
    let mut interval = tokio::time::interval(config.gc_interval);
    // The first tick is immediate: a restart over the cap (say, a lowered cap) evicts at once.
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            () = store.over_cap() => {}
        }
        if store.is_full() && config.max_size.is_none() {
            // Nothing to evict, and collecting orphans writes the index, which a full disk may
            // fail; fills find out when space is back.
            tracing::debug!("store full: background maintenance waits for space");
            tokio::time::sleep(MAINTAIN_GAP).await;
            continue;
        }
        let (working, settings) = (store.clone(), config.clone());
        let pass = tokio::task::spawn_blocking(move || {
            working.maintain(&pmcache_proxy::SCHEMA, &settings)
        });
        match pass.await {
            Ok(Ok(report)) if report.freed_bytes() > 0 => tracing::info!(
                evicted_blobs = report.evicted_blobs,
                evicted_bytes = report.evicted_bytes,
                orphan_blobs = report.orphan_blobs,
                temp_files = report.temp_files,
                size = report.size_bytes,
                "store maintenance freed {} bytes",
                report.freed_bytes()
            ),
            Ok(Ok(_)) => {}
            Ok(Err(error)) => tracing::warn!(%error, "store maintenance failed"),
            Err(error) => tracing::warn!(%error, "store maintenance task failed"),
        }
        tokio::time::sleep(MAINTAIN_GAP).await;
    }
}

/// Whether clients would send their tokens unencrypted over a network: tokens configured, no
/// TLS, and a listening address other than loopback.
fn tokens_in_clear(tls: bool, tokens: bool, listening: std::net::IpAddr) -> bool {
    tokens && !tls && !listening.is_loopback()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_tokens_over_plain_http_beyond_loopback_are_in_clear() {
        let any: std::net::IpAddr = "0.0.0.0".parse().unwrap();
        let lan: std::net::IpAddr = "10.1.2.3".parse().unwrap();
        let loopback: std::net::IpAddr = "127.0.0.1".parse().unwrap();
        let loopback6: std::net::IpAddr = "::1".parse().unwrap();
        assert!(tokens_in_clear(false, true, any));
        assert!(tokens_in_clear(false, true, lan));
        assert!(!tokens_in_clear(false, true, loopback));
        assert!(!tokens_in_clear(false, true, loopback6));
        assert!(!tokens_in_clear(true, true, any), "TLS");
        assert!(!tokens_in_clear(false, false, any), "no tokens");
    }
}
