//! The pmcache binary: command line, configuration, logging, and the commands `serve`, `gc`,
//! `verify`, `purge` and `token`.

// The binary is where pmcache talks to its operator: reports of `gc` and `verify`, the listening
// address, and errors before logging is set up go to the terminal.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod admin;
mod admission;
mod auth;
mod config;
mod connection;
mod control;
mod forwarded;
mod frontend;
mod idle;
mod input;
mod metrics;
mod network;
mod policy_check;
mod request_body;
mod router;
mod server;
mod tls;

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use pmcache_proxy::{PurgeReport, Role};
use pmcache_store::{ByteSize, GcReport, Store, VerifyReport};
use tracing_subscriber::EnvFilter;

use crate::config::{Config, LogFormat, Overrides};

/// One pull-through caching mirror for PyPI, npm, RubyGems and Packagist.
#[derive(Parser)]
#[command(name = "pmcache", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the mirror.
    Serve(Settings),
    /// Re-hash every blob and check that every index entry points at one; corrupt blobs go to
    /// quarantine and their entries are dropped. Safe while `serve` runs (it asks the server).
    Verify(Settings),
    /// Evict down to storage.max_size and remove unreferenced blobs and stale temp files.
    /// Safe while `serve` runs (it asks the server).
    Gc(Settings),
    /// Drop one package (or one version of it) from the cache: its metadata, its artifacts and
    /// the blobs nothing else names, so that the next request fetches and verifies them again.
    /// Safe while `serve` runs (it asks the server).
    Purge(PurgeArgs),
    /// Manage the tokens that grant roles ([[auth.tokens]]).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Ask the configured supply-chain policy (`[policy]`, `[[routes]]`) about a package.
    #[command(subcommand)]
    Policy(PolicyCommand),
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Print where a package comes from and whether it (and a version of it) is served, and
    /// why. Reads the configuration `serve` would; asks no upstream. Exits 0 when served, 3 when
    /// refused.
    Check(PolicyCheckArgs),
}

#[derive(Args)]
struct PolicyCheckArgs {
    /// pypi, npm, rubygems or packagist.
    ecosystem: String,
    /// The package, in any spelling its clients use: Demo_App, @scope/name, rack, vendor/name.
    name: String,
    /// A version of it (as the ecosystem spells it).
    version: Option<String>,
    /// When VERSION was published, so that min_release_age can judge it: an RFC 3339 time
    /// (2026-12-01T10:00:00Z) or an age (2h, 3d).
    #[arg(long, requires = "version")]
    published: Option<String>,
    #[command(flatten)]
    settings: Settings,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Print a fresh random token once, and the [[auth.tokens]] block (its hash) to configure.
    New {
        /// The token's name in logs and metrics, e.g. post-merge.
        #[arg(long)]
        name: String,
        /// The role it grants: read, populate or admin.
        #[arg(long, value_parser = parse_role)]
        role: Role,
    },
}

fn parse_role(text: &str) -> Result<Role, String> {
    match text {
        "read" => Ok(Role::Read),
        "populate" => Ok(Role::Populate),
        "admin" => Ok(Role::Admin),
        _ => Err("a role is read, populate or admin".to_owned()),
    }
}

#[derive(Args)]
struct PurgeArgs {
    /// pypi, npm, rubygems or packagist.
    ecosystem: String,
    /// The package, as its clients name it: demo-app, @scope/name, rack, vendor/name.
    name: String,
    /// Only this version (as the ecosystem spells it: 1.0.0, 2.1.0rc1, v1.2.0); all when left out.
    version: Option<String>,
    #[command(flatten)]
    settings: Settings,
}

#[derive(Args)]
struct Settings {
    /// A TOML config file (see config/example.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address to listen on, e.g. 0.0.0.0:7878 (port 0 picks a free port).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Directory for the cache's blobs and index.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

impl Settings {
    fn load(&self) -> anyhow::Result<config::Loaded> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        let flags = Overrides {
            listen: self.listen,
            data_dir: self.data_dir.clone(),
        };
        config::load(self.config.as_deref(), &env, &flags)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("pmcache: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(settings) => {
            let config::Loaded {
                config,
                ignored_env,
            } = settings.load()?;
            // Held to the end of this arm: the log is written out after the server stops,
            // whether it stopped cleanly or with an error.
            let _log = init_logging(&config);
            for name in ignored_env {
                tracing::warn!(variable = %name, "ignoring a PMCACHE_ variable that names no setting");
            }
            let runtime =
                tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            let served = runtime.block_on(server::serve(config));
            // A discovery still waiting on a hung pip or npm holds a blocking thread: do not
            // wait for it to stop.
            runtime.shutdown_timeout(std::time::Duration::from_secs(1));
            served?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify(settings) => verify(&settings.load()?.config),
        Command::Gc(settings) => gc(&settings.load()?.config),
        Command::Purge(args) => purge(&args),
        Command::Token(TokenCommand::New { name, role }) => new_token(&name, role),
        Command::Policy(PolicyCommand::Check(args)) => policy_check(&args),
    }
}

/// `pmcache policy check`: the report on stdout; exit status 3 when a client would be refused.
fn policy_check(args: &PolicyCheckArgs) -> anyhow::Result<ExitCode> {
    let config = args.settings.load()?.config;
    let policy = config
        .policy()
        .context("the policy settings are not valid")?;
    let ecosystem: pmcache_policy::Ecosystem = args
        .ecosystem
        .parse()
        .map_err(|error| anyhow::anyhow!("{error}"))?;
    let now = std::time::SystemTime::now();
    let published = args
        .published
        .as_deref()
        .map(|text| policy_check::parse_published(text, now))
        .transpose()
        .map_err(|why| anyhow::anyhow!("--published: {why}"))?;
    let question = policy_check::Question {
        ecosystem,
        name: &args.name,
        version: args.version.as_deref(),
        published,
    };
    let report = policy_check::check(&policy, &question, now);
    println!("{}", report.lines.join("\n"));
    Ok(if report.served {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}

/// `pmcache token new`: the token goes to the terminal once; only its hash is configured.
fn new_token(name: &str, role: Role) -> anyhow::Result<ExitCode> {
    let token = auth::new_token()?;
    let entry = auth::TokenConfig {
        name: name.to_owned(),
        role,
        sha256: auth::token_hash(&token),
    };
    let check = auth::AuthConfig {
        tokens: vec![entry.clone()],
        ..auth::AuthConfig::default()
    };
    check.check()?;
    println!(
        "token (shown once; give it to the jobs that get the {} role):",
        role.as_str()
    );
    println!("{token}");
    println!();
    println!(
        "add to pmcache's config (or, without the auth. prefix, to PMCACHE_AUTH_TOKENS_FILE):"
    );
    print!(
        "{}",
        auth::config_block(&entry.name, entry.role, &entry.sha256)
    );
    Ok(ExitCode::SUCCESS)
}

fn verify(config: &Config) -> anyhow::Result<ExitCode> {
    let (report, via) = match ask_server(config, "/verify")? {
        Some(json) => (
            serde_json::from_slice::<VerifyReport>(&json)?,
            "the running server",
        ),
        None => {
            let store = open_store(config, Store::inspect)?;
            (
                store.verify(&pmcache_proxy::SCHEMA, true)?,
                "the data directory",
            )
        }
    };
    println!(
        "verified through {via}: blobs: {}, corrupt: {}, quarantined: {}, index entries: {}, dangling: {}, repaired entries: {}, temp files: {}",
        report.blobs,
        report.corrupt_blobs.len(),
        report.quarantined.len(),
        report.entries,
        report.dangling_entries.len(),
        report.repaired_entries,
        report.temp_files
    );
    for digest in &report.corrupt_blobs {
        println!("corrupt blob {digest}");
    }
    for digest in &report.quarantined {
        println!("quarantined blob {digest} (it is fetched again on the next request)");
    }
    for entry in &report.dangling_entries {
        println!("dangling entry {entry}");
    }
    Ok(if report.is_consistent() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn gc(config: &Config) -> anyhow::Result<ExitCode> {
    let (report, via) = match ask_server(config, "/gc")? {
        Some(json) => (
            serde_json::from_slice::<GcReport>(&json)?,
            "the running server",
        ),
        None => {
            // Nobody serves the directory: every temp file is a dead process's (`open` sweeps).
            let store = open_store(config, Store::open)?;
            (
                store.maintain(&pmcache_proxy::SCHEMA, &config.storage)?,
                "the data directory",
            )
        }
    };
    let cap = report
        .max_size_bytes
        .map_or_else(|| "unbounded".to_owned(), |max| ByteSize(max).to_string());
    println!(
        "gc through {via}: freed {} bytes: evicted {} blobs ({} bytes, {} index records), removed {} unreferenced blobs ({} bytes) and {} stale temp files ({} bytes); store now {} bytes (cap {cap})",
        report.freed_bytes(),
        report.evicted_blobs,
        report.evicted_bytes,
        report.detached_records,
        report.orphan_blobs,
        report.orphan_bytes,
        report.temp_files,
        report.temp_bytes,
        report.size_bytes,
    );
    Ok(ExitCode::SUCCESS)
}

fn purge(args: &PurgeArgs) -> anyhow::Result<ExitCode> {
    let path = control::purge_path(&args.ecosystem, &args.name, args.version.as_deref());
    // Parsed here too: a bad name is refused without a server, as with one.
    let admin::Command::Purge(target) = admin::control_route(&path)? else {
        bail!("{path} is not a purge");
    };
    let config = args.settings.load()?.config;
    let (report, via) = match ask_server(&config, &path)? {
        Some(json) => (
            serde_json::from_slice::<PurgeReport>(&json)?,
            "the running server",
        ),
        None => {
            let store = open_store(&config, Store::open)?;
            (pmcache_proxy::purge(&store, &target)?, "the data directory")
        }
    };
    let version = report.version.as_deref().unwrap_or("(all versions)");
    println!(
        "purged through {via}: {} {} {version}: {} documents, {} artifacts, {} sources, {} blobs ({} bytes freed), {} relayed copies",
        report.ecosystem,
        report.package,
        report.documents,
        report.artifacts,
        report.sources,
        report.blobs,
        report.freed_bytes,
        report.relayed,
    );
    Ok(ExitCode::SUCCESS)
}

/// The running server's answer to `command`, or None when nobody serves the data directory.
fn ask_server(config: &Config, command: &str) -> anyhow::Result<Option<bytes::Bytes>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(control::ask(&config.data_dir, command))
}

fn open_store(
    config: &Config,
    open: fn(&std::path::Path) -> pmcache_store::Result<Store>,
) -> anyhow::Result<Store> {
    open(&config.data_dir).with_context(|| {
        format!(
            "cannot open the data directory {} (if pmcache serves it, its control socket {} did not answer)",
            config.data_dir.display(),
            control::socket_path(&config.data_dir).display()
        )
    })
}

/// Installs the log subscriber. Lines are formatted on the thread that logs and written to
/// stderr by a writer thread through a buffer it flushes whenever its queue is empty: a
/// request line costs the serving thread no system call, and a burst of lines one write. The
/// writer never drops a line (a full queue makes loggers wait); the returned guard writes out
/// what is queued when it is dropped (waiting up to a second), so it must live until the end of
/// `serve`. Lines still queued when the process is killed are lost.
#[must_use = "dropping the guard stops the log writer"]
fn init_logging(config: &Config) -> tracing_appender::non_blocking::WorkerGuard {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log.filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("pmcache-log")
        .finish(std::io::BufWriter::with_capacity(
            64 << 10,
            std::io::stderr(),
        ));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(writer);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
    guard
}
