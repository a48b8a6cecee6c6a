//! The pmcache binary: command line, configuration, logging, and the commands `serve` and
//! `verify`.

mod config;
mod connection;
mod input;
mod metrics;
mod router;
mod server;

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use pmcache_store::Store;
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
    /// Re-hash every blob and check that every index entry points at one (pmcache stopped).
    Verify(Settings),
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
            init_logging(&config);
            for name in ignored_env {
                tracing::warn!(variable = %name, "ignoring a PMCACHE_ variable that names no setting");
            }
            let runtime =
                tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            runtime.block_on(server::serve(config))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify(settings) => verify(&settings.load()?.config),
    }
}

fn verify(config: &Config) -> anyhow::Result<ExitCode> {
    let store = Store::inspect(&config.data_dir).with_context(|| {
        format!(
            "cannot open the data directory {}",
            config.data_dir.display()
        )
    })?;
    let report = store.verify(&pmcache_proxy::referenced_digests)?;
    println!(
        "blobs: {}, corrupt: {}, index entries: {}, dangling: {}, temp files: {}",
        report.blobs,
        report.corrupt_blobs.len(),
        report.entries,
        report.dangling_entries.len(),
        report.temp_files
    );
    for digest in &report.corrupt_blobs {
        println!("corrupt blob {digest}");
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

fn init_logging(config: &Config) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log.filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
