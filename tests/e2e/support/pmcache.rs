//! The pmcache process under test: spawn it, wait for its listening line, stop or kill it, read
//! its metrics and its log, and look into its data dir. It logs JSON lines (`log.format =
//! "json"`), so tests read fields (a request's path, status and cache result) rather than match
//! text. Its stderr goes to a file that is printed, as readable lines, when the handle is dropped
//! (libtest shows it only for failing tests).

use std::fs::File;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};

use super::{Finished, read_lossy, run_bounded, wait_until};

/// How long pmcache may take to print its listening line.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a SIGTERM may take to stop it.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
const LISTENING_PREFIX: &str = "pmcache listening on ";
/// How long a failed or aborted fill may take to clean its temp file up.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the log may take to show the line of the request sent as a barrier.
const LOG_BARRIER_TIMEOUT: Duration = Duration::from_secs(10);
/// The log filter pmcache runs with: requests (info) and the decisions of the proxy, the PyPI
/// frontend and the store (debug). A case adds a frontend's with its own `RUST_LOG` setting.
pub const LOG_FILTER: &str =
    "info,pmcache=debug,pmcache_proxy=debug,pmcache_pypi=debug,pmcache_store=debug";

/// Waits until a document pmcache fetched no later than `fetched_by` is at least `age` old as
/// pmcache counts it (whole seconds of the wall clock since the fetch): then a request past
/// `upstream.refetch_floor = age` makes pmcache fetch it again.
pub fn wait_until_document_older_than(fetched_by: SystemTime, age: Duration) -> Result<()> {
    let unix = |time: SystemTime| {
        time.duration_since(UNIX_EPOCH)
            .map(|elapsed| elapsed.as_secs())
            .unwrap_or_default()
    };
    let whole_seconds = age.as_secs() + u64::from(age.subsec_nanos() > 0);
    let fetched = unix(fetched_by);
    wait_until(
        age + Duration::from_secs(2),
        &format!("a document fetched by {fetched} to be {age:?} old"),
        || Ok(unix(SystemTime::now()).saturating_sub(fetched) >= whole_seconds),
    )
}

/// How to start pmcache.
pub struct Launch {
    pub args: Vec<String>,
    /// The complete environment: pmcache inherits nothing else.
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    /// Where its stderr log goes.
    pub log: PathBuf,
}

impl Launch {
    /// `pmcache serve --listen 127.0.0.1:0 --data-dir DATA_DIR`, run in `scratch` with HOME
    /// `scratch/home`, logging to a new file in `scratch`, with `env` added to a minimal
    /// environment.
    pub fn serve(scratch: &Path, data_dir: &Path, env: &[(&str, &str)]) -> Result<Self> {
        let data_dir = data_dir.to_str().context("data dir is not UTF-8")?;
        let mut launch = Self::bare(
            scratch,
            &["serve", "--listen", "127.0.0.1:0", "--data-dir", data_dir],
        )?;
        launch.env.extend(
            env.iter()
                .map(|(key, value)| ((*key).to_owned(), (*value).to_owned())),
        );
        Ok(launch)
    }

    /// Makes pmcache see what a local client sees: the inherited environment (real HOME
    /// included), less any pmcache setting, with this launch's settings but HOME on top.
    pub fn inherit_environment(&mut self) {
        let ours = std::mem::take(&mut self.env);
        self.env = std::env::vars()
            .filter(|(key, _)| !key.starts_with("PMCACHE_"))
            .collect();
        self.env
            .extend(ours.into_iter().filter(|(key, _)| key != "HOME"));
    }

    /// `pmcache ARGS` with only PATH, HOME (`scratch/home`), LANG and log settings set.
    pub fn bare(scratch: &Path, args: &[&str]) -> Result<Self> {
        static LOGS: AtomicUsize = AtomicUsize::new(0);
        let home = scratch.join("home");
        std::fs::create_dir_all(&home)?;
        let home = home
            .to_str()
            .context("scratch dir is not UTF-8")?
            .to_owned();
        let log = scratch.join(format!(
            "pmcache-{}.stderr.log",
            LOGS.fetch_add(1, Ordering::Relaxed)
        ));
        Ok(Self {
            args: args.iter().map(|arg| (*arg).to_owned()).collect(),
            env: vec![
                ("PATH".to_owned(), super::subprocess_path()?),
                ("HOME".to_owned(), home),
                ("LANG".to_owned(), "C.UTF-8".to_owned()),
                ("RUST_BACKTRACE".to_owned(), "1".to_owned()),
                // One JSON object per line: tests read fields, not text.
                ("PMCACHE_LOG_FORMAT".to_owned(), "json".to_owned()),
                ("RUST_LOG".to_owned(), LOG_FILTER.to_owned()),
            ],
            cwd: scratch.to_owned(),
            log,
        })
    }
}

/// A running (or stopped) pmcache serve process.
pub struct Pmcache {
    child: Child,
    base_url: String,
    log: PathBuf,
}

impl Pmcache {
    /// Starts `pmcache serve` on port 0 with `env` (see [`Launch::serve`]).
    pub fn serve(scratch: &Path, data_dir: &Path, env: &[(&str, &str)]) -> Result<Self> {
        Self::spawn(Launch::serve(scratch, data_dir, env)?)
    }

    /// Starts pmcache and waits for `pmcache listening on URL` on its stdout.
    pub fn spawn(launch: Launch) -> Result<Self> {
        let mut child = Command::new(binary())
            .args(&launch.args)
            .env_clear()
            .envs(launch.env.iter().map(|(key, value)| (key, value)))
            .current_dir(&launch.cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(File::create(&launch.log)?)
            .spawn()
            .with_context(|| format!("spawning {}", binary()))?;
        let stdout = child.stdout.take().context("pmcache stdout")?;
        let (sender, receiver) = mpsc::channel();
        // Reads the listening line, then keeps draining stdout so pmcache never blocks on it.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(url) = line.strip_prefix(LISTENING_PREFIX) {
                    let _ = sender.send(url.trim().to_owned());
                }
            }
        });
        let mut pmcache = Self {
            child,
            base_url: String::new(),
            log: launch.log,
        };
        match receiver.recv_timeout(START_TIMEOUT) {
            Ok(url) => {
                pmcache.base_url = url.trim_end_matches('/').to_owned();
                Ok(pmcache)
            }
            Err(mpsc::RecvTimeoutError::Timeout) => bail!(
                "pmcache {:?} printed no `{LISTENING_PREFIX}URL` line within {START_TIMEOUT:?}; stderr:\n{}",
                launch.args,
                pmcache.readable_log()
            ),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = pmcache.child.wait()?;
                bail!(
                    "pmcache {:?} exited ({status}) before listening; stderr:\n{}",
                    launch.args,
                    pmcache.readable_log()
                )
            }
        }
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The port pmcache listens on, for requests that name another host on it.
    pub fn port(&self) -> Result<&str> {
        self.base_url
            .rsplit(':')
            .next()
            .context("pmcache URL without a port")
    }

    /// The index URL to give pip.
    pub fn pypi_index_url(&self) -> String {
        format!("{}/pypi/simple/", self.base_url)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Peak resident set size in bytes (`VmHWM` of `/proc/PID/status`).
    pub fn peak_rss_bytes(&self) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        let line = status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .context("no VmHWM in /proc/PID/status")?;
        let kib: u64 = line.trim().trim_end_matches("kB").trim().parse()?;
        Ok(kib * 1024)
    }

    /// Resets the peak resident set size to the current one (`5` to `/proc/PID/clear_refs`), so
    /// that a later [`Pmcache::peak_rss_bytes`] tells the peak since now, not since start-up.
    pub fn reset_peak_rss(&self) -> Result<()> {
        std::fs::write(format!("/proc/{}/clear_refs", self.pid()), "5")
            .context("resetting the peak RSS (/proc/PID/clear_refs)")
    }

    /// SIGKILL, and reap it.
    pub fn kill9(&mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// SIGTERM, then wait for it to exit.
    pub fn stop(&mut self) -> Result<ExitStatus> {
        if let Some(status) = self.child.try_wait()? {
            return Ok(status);
        }
        let sent = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()?;
        if !sent.success() {
            bail!("kill -TERM {} failed", self.pid());
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                self.kill9()?;
                bail!(
                    "pmcache did not stop within {STOP_TIMEOUT:?} of SIGTERM; stderr:\n{}",
                    self.readable_log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The value of the Prometheus sample `name` (no labels) at `/metrics`, if present.
    pub fn metric(&self, name: &str) -> Result<Option<f64>> {
        let response = super::http::get(&format!("{}/metrics", self.base_url))?;
        ensure!(
            response.status == 200,
            "GET /metrics: {}",
            response.describe()
        );
        Ok(response.text().lines().find_map(|line| {
            let (sample, value) = line.split_once(' ')?;
            (sample == name).then(|| value.trim().parse().ok())?
        }))
    }

    /// The sum of the Prometheus samples of `name` at `/metrics` whose label set (the text
    /// between the braces, e.g. `ecosystem="npm",cache="miss",status="200"`) satisfies `wanted`.
    pub fn metric_sum(&self, name: &str, wanted: impl Fn(&str) -> bool) -> Result<f64> {
        Ok(self
            .metric_samples(name)?
            .iter()
            .filter(|(labels, _)| wanted(labels))
            .map(|(_, value)| value)
            .sum())
    }

    /// The labelled Prometheus samples of `name` at `/metrics`: each label set (the text between
    /// the braces) with its value.
    pub fn metric_samples(&self, name: &str) -> Result<Vec<(String, f64)>> {
        let response = super::http::get(&format!("{}/metrics", self.base_url))?;
        ensure!(
            response.status == 200,
            "GET /metrics: {}",
            response.describe()
        );
        let prefix = format!("{name}{{");
        let mut samples = Vec::new();
        for line in response.text().lines() {
            let Some(rest) = line.strip_prefix(&prefix) else {
                continue;
            };
            let (labels, value) = rest
                .split_once("} ")
                .with_context(|| format!("unexpected metric line {line:?}"))?;
            let value = value
                .trim()
                .parse::<f64>()
                .with_context(|| format!("metric line {line:?}"))?;
            samples.push((labels.to_owned(), value));
        }
        Ok(samples)
    }

    /// Fails if pmcache's `/metrics` counts a request answered with a 5xx
    /// (`pmcache_requests_total`) or an upstream body that broke off
    /// (`pmcache_upstream_body_errors_total`). Never vacuous: it also fails when
    /// `pmcache_requests_total` is missing, so a renamed metric cannot make it pass.
    pub fn ensure_no_server_errors(&self) -> Result<()> {
        let requests = self.metric_samples("pmcache_requests_total")?;
        ensure!(
            !requests.is_empty(),
            "no pmcache_requests_total samples at /metrics"
        );
        let errors: Vec<_> = requests
            .iter()
            .filter(|(labels, value)| labels.contains("status=\"5") && *value != 0.0)
            .collect();
        let cut = self.metric_sum("pmcache_upstream_body_errors_total", |_| true)?;
        ensure!(
            errors.is_empty() && cut == 0.0,
            "pmcache answered with server errors {errors:?} and saw {cut} upstream bodies break \
             off (its log is printed below)"
        );
        Ok(())
    }

    /// Its stderr so far, as written: JSON lines, and whatever else reached stderr (a panic).
    /// pmcache writes its log from a thread of its own, so the line of an answer may reach the
    /// file a moment after the answer: while pmcache runs, this first sends a `HEAD /healthz`
    /// and waits for its line. One writer writes lines in order, so once that line is in the
    /// file, so is every line logged before it. A pmcache that does not answer has stopped,
    /// and a stopped pmcache has written everything.
    pub fn log_text(&self) -> String {
        let barriers = |text: &str| text.lines().filter(|line| is_log_barrier(line)).count();
        let before = barriers(&read_lossy(&self.log));
        let url = format!("{}/healthz", self.base_url);
        if self.base_url.is_empty() || super::http::send("HEAD", &url, &[], b"").is_err() {
            return read_lossy(&self.log);
        }
        let mut text = String::new();
        let _ = wait_until(LOG_BARRIER_TIMEOUT, "pmcache's log to catch up", || {
            text = read_lossy(&self.log);
            Ok(barriers(&text) > before)
        });
        text
    }

    /// Its stderr so far with each JSON event as one readable line, for messages.
    pub fn readable_log(&self) -> String {
        readable(&self.log_text())
    }

    /// The events it logged so far, in order (lines that are not JSON objects are left out).
    pub fn events(&self) -> Vec<Event> {
        self.log_text().lines().filter_map(Event::parse).collect()
    }

    /// The events whose message starts with `prefix`, in order.
    pub fn events_starting(&self, prefix: &str) -> Vec<Event> {
        self.events()
            .into_iter()
            .filter(|event| event.message().starts_with(prefix))
            .collect()
    }

    /// The events whose message is `message`, in order.
    pub fn events_named(&self, message: &str) -> Vec<Event> {
        self.events()
            .into_iter()
            .filter(|event| event.message() == message)
            .collect()
    }

    /// Every request it answered so far, in order (its `request` log events), less the
    /// `HEAD /healthz` requests [`Pmcache::log_text`] sends.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.events_named("request")
            .iter()
            .filter_map(LoggedRequest::of)
            .filter(|request| !(request.method == "HEAD" && request.path == "/healthz"))
            .collect()
    }

    /// The statuses of the requests for `path` (no query) it answered, in order.
    pub fn statuses(&self, path: &str) -> Vec<u16> {
        self.requests()
            .into_iter()
            .filter(|request| request.path == path)
            .map(|request| request.status)
            .collect()
    }

    /// The cache results (`hit`, `miss`, `stale`, `revalidated`, `none`) of the requests for
    /// `path` it answered with `status`, in order.
    pub fn cache_results(&self, path: &str, status: u16) -> Vec<String> {
        self.requests()
            .into_iter()
            .filter(|request| request.path == path && request.status == status)
            .map(|request| request.cache)
            .collect()
    }
}

/// One line of pmcache's JSON log: `{"timestamp", "level", "fields": {"message", ...},
/// "target"}` as `tracing-subscriber` writes it.
#[derive(Clone, Debug)]
pub struct Event(serde_json::Value);

impl Event {
    fn parse(line: &str) -> Option<Event> {
        let value: serde_json::Value = serde_json::from_str(line).ok()?;
        value.is_object().then_some(Event(value))
    }

    /// The event's message.
    pub fn message(&self) -> &str {
        self.0["fields"]["message"].as_str().unwrap_or_default()
    }

    /// `INFO`, `WARN`, ...
    pub fn level(&self) -> &str {
        self.0["level"].as_str().unwrap_or_default()
    }

    /// The field `name` (of the event itself), if it has one.
    pub fn field(&self, name: &str) -> Option<&serde_json::Value> {
        self.0["fields"].get(name)
    }

    /// The field `name` as text: strings as they are, other values as JSON.
    pub fn text(&self, name: &str) -> Option<String> {
        self.field(name).map(|value| match value {
            serde_json::Value::String(text) => text.clone(),
            other => other.to_string(),
        })
    }

    /// Whether `text` appears in the event's message or any of its fields.
    pub fn mentions(&self, text: &str) -> bool {
        self.0["fields"].to_string().contains(text)
    }

    /// The event as one readable line: `LEVEL target: message key=value ...`.
    fn readable(&self) -> String {
        let mut line = format!(
            "{} {} {}: {}",
            self.0["timestamp"].as_str().unwrap_or_default(),
            self.level(),
            self.0["target"].as_str().unwrap_or_default(),
            self.message()
        );
        if let Some(fields) = self.0["fields"].as_object() {
            for (key, value) in fields.iter().filter(|(key, _)| *key != "message") {
                line.push_str(&format!(" {key}={value}"));
            }
        }
        line
    }
}

/// A request pmcache answered, from its `request` log event.
#[derive(Clone, Debug)]
pub struct LoggedRequest {
    pub method: String,
    /// Without the query.
    pub path: String,
    pub status: u16,
    /// `hit`, `miss`, `stale`, `revalidated` or `none`.
    pub cache: String,
}

impl LoggedRequest {
    fn of(event: &Event) -> Option<LoggedRequest> {
        Some(LoggedRequest {
            method: event.text("method")?,
            path: event.text("path")?,
            status: u16::try_from(event.field("status")?.as_u64()?).ok()?,
            cache: event.text("cache")?,
        })
    }
}

/// `text` (pmcache's stderr) with each JSON event as a readable line.
fn readable(text: &str) -> String {
    text.lines()
        .map(|line| Event::parse(line).map_or_else(|| line.to_owned(), |event| event.readable()))
        .collect::<Vec<_>>()
        .join("\n")
}

impl Drop for Pmcache {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        eprintln!(
            "---- pmcache stderr ({}) ----\n{}---- end of pmcache stderr ----",
            self.log.display(),
            tail(&self.readable_log(), 300)
        );
    }
}

/// The last `lines` lines of `text`.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    let start = all.len().saturating_sub(lines);
    let mut tail = all[start..].join("\n");
    tail.push('\n');
    tail
}

/// The pmcache binary Cargo built for this test run.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_pmcache")
}

/// `pmcache verify --data-dir DATA_DIR`, run to completion (through the server when one serves
/// the directory).
pub fn verify(scratch: &Path, data_dir: &Path) -> Result<Finished> {
    maintenance("verify", scratch, data_dir)
}

/// `pmcache gc --data-dir DATA_DIR`, run to completion.
pub fn gc(scratch: &Path, data_dir: &Path) -> Result<Finished> {
    maintenance("gc", scratch, data_dir)
}

/// `pmcache purge ECOSYSTEM NAME [VERSION] --data-dir DATA_DIR` (`target` is what follows
/// `purge`), run to completion (through the server when one serves the directory).
pub fn purge(scratch: &Path, data_dir: &Path, target: &[&str]) -> Result<Finished> {
    let mut args = vec!["purge"];
    args.extend_from_slice(target);
    run_command(&args, scratch, data_dir)
}

fn maintenance(subcommand: &str, scratch: &Path, data_dir: &Path) -> Result<Finished> {
    run_command(&[subcommand], scratch, data_dir)
}

fn run_command(args: &[&str], scratch: &Path, data_dir: &Path) -> Result<Finished> {
    let mut command = Command::new(binary());
    command
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env_clear()
        .current_dir(scratch);
    command
        .env("PATH", super::subprocess_path()?)
        .env("HOME", scratch.join("home"));
    run_bounded(command, &scratch.join("logs"), Duration::from_secs(60))
}

/// The sha256 names of every blob in the store (`DIR/blobs/xx/yy/<sha256>`).
pub fn blobs(data_dir: &Path) -> Result<Vec<String>> {
    Ok(files_under(&data_dir.join("blobs"))?
        .iter()
        .filter_map(|path| path.file_name()?.to_str().map(str::to_owned))
        .collect())
}

/// The bytes of every file under the data dir (blobs, index, temp files).
pub fn data_size(data_dir: &Path) -> Result<u64> {
    files_under(data_dir)?
        .iter()
        .map(|path| {
            let metadata = std::fs::metadata(path)
                .with_context(|| format!("reading the size of {}", path.display()))?;
            Ok(metadata.len())
        })
        .sum()
}

/// Every one of `digests` is a blob in the store.
pub fn ensure_stored(data_dir: &Path, digests: &[&str]) -> Result<()> {
    let blobs = blobs(data_dir)?;
    for digest in digests {
        ensure!(
            blobs.iter().any(|blob| blob == digest),
            "no blob {digest} in the store; blobs: {blobs:?}"
        );
    }
    Ok(())
}

/// None of `digests` is a blob in the store.
pub fn ensure_not_stored(data_dir: &Path, digests: &[&str]) -> Result<()> {
    let blobs = blobs(data_dir)?;
    for digest in digests {
        ensure!(
            !blobs.iter().any(|blob| blob == digest),
            "blob {digest} was committed; blobs: {blobs:?}"
        );
    }
    Ok(())
}

/// Waits until no temp file is left in the store.
pub fn wait_for_empty_tmp(data_dir: &Path) -> Result<()> {
    wait_until(SETTLE_TIMEOUT, "the store's tmp/ to be empty", || {
        Ok(tmp_files(data_dir)?.is_empty())
    })
    .with_context(|| format!("left in tmp/: {:?}", tmp_files(data_dir)))
}

/// Every file under `DIR/tmp/`.
pub fn tmp_files(data_dir: &Path) -> Result<Vec<PathBuf>> {
    files_under(&data_dir.join("tmp"))
}

/// Every regular file below `dir`, recursively; none if `dir` does not exist.
fn files_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(error) => return Err(error).with_context(|| format!("listing {}", dir.display())),
        };
        for entry in entries {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                pending.push(entry.path());
            } else {
                found.push(entry.path());
            }
        }
    }
    found.sort();
    Ok(found)
}

/// A TOML array of `host:port` for `PMCACHE_UPSTREAM_TRUSTED_HOSTS`.
pub fn trusted_hosts(addrs: &[std::net::SocketAddr]) -> String {
    let quoted: Vec<String> = addrs.iter().map(|addr| format!("\"{addr}\"")).collect();
    format!("[{}]", quoted.join(", "))
}

/// Whether a log line is that of a `HEAD /healthz` request, the barrier [`Pmcache::log_text`]
/// sends.
fn is_log_barrier(line: &str) -> bool {
    Event::parse(line).is_some_and(|event| {
        event.message() == "request"
            && event.text("method").as_deref() == Some("HEAD")
            && event.text("path").as_deref() == Some("/healthz")
    })
}
