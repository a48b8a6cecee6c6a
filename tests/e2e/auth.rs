//! Trust tiers (issue 13), authentication: with `anonymous = "none"` every mount refuses a
//! request without a token or with a wrong one (401 with the Basic challenge); real clients pass
//! the right one through their own credential settings; the token itself never shows in the
//! log, the metrics, the data directory or a request to an upstream.

mod credential_stores;
mod tiers;

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, ensure};
use base64::Engine as _;

use crate::npm::{ensure_demo_tree, new_project};
use crate::pypi::check_demo_app_imports;
use crate::rubygems::ensure_cached_gem;
use crate::support::case::Case;
use crate::support::client_run::ClientRun;
use crate::support::composer::{Project as ComposerProject, Sandbox as ComposerSandbox};
use crate::support::gem::Sandbox as GemSandbox;
use crate::support::http;
use crate::support::npm::Sandbox;
use crate::support::npm_upstream::{Kind, NpmUpstream};
use crate::support::packagist_packages::APP as COMPOSER_APP;
use crate::support::packagist_upstream::PackagistUpstream;
use crate::support::pip::Venv;
use crate::support::pmcache;
use crate::support::pypi_upstream::{PageFormat, PypiUpstream};
use crate::support::rubygems_gems::APP as GEM_APP;
use crate::support::uv::Uv;

/// A token made by `pmcache token new`, and the file of `[[tokens]]` that grants it.
pub(crate) struct Token {
    pub(crate) secret: String,
    /// Holds the tokens file for as long as pmcache may read it.
    _dir: tempfile::TempDir,
    /// The tokens file (`[[tokens]]`).
    pub(crate) file: String,
}

impl Token {
    /// `pmcache token new --name NAME --role ROLE`: the token it printed once, and its block
    /// written to a tokens file (`[[tokens]]`, the `PMCACHE_AUTH_TOKENS_FILE` shape).
    pub(crate) fn new(name: &str, role: &str) -> Result<Token> {
        let output = Command::new(pmcache::binary())
            .args(["token", "new", "--name", name, "--role", role])
            .env_clear()
            .output()?;
        ensure!(output.status.success(), "pmcache token new: {output:?}");
        let text = String::from_utf8(output.stdout)?;
        let mut lines = text.lines();
        let secret = lines.nth(1).context("no token line")?.trim().to_owned();
        ensure!(
            secret.len() >= 32 && secret.bytes().all(|b| b.is_ascii_hexdigit()),
            "token {secret:?} is not at least 128 bits of hex"
        );
        let block = text
            .split_once("[[auth.tokens]]")
            .context("no [[auth.tokens]] block")?
            .1;
        ensure!(
            block.contains(&crate::support::sha256_hex(secret.as_bytes())),
            "the block does not carry the token's sha256:\n{text}"
        );
        ensure!(
            !block.contains(&secret),
            "the block carries the token itself"
        );
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("tokens.toml");
        std::fs::write(&path, format!("[[tokens]]{block}"))?;
        Ok(Token {
            secret,
            file: path.to_str().context("temp dir is not UTF-8")?.to_owned(),
            _dir: dir,
        })
    }

    /// Settings that refuse anonymous requests and accept this token.
    fn settings(&self) -> [(&str, &str); 2] {
        [
            ("PMCACHE_AUTH_ANONYMOUS", "none"),
            ("PMCACHE_AUTH_TOKENS_FILE", self.file.as_str()),
        ]
    }

    pub(crate) fn bearer(&self) -> String {
        format!("Bearer {}", self.secret)
    }

    fn basic(&self, user: &str) -> String {
        basic(&format!("{user}:{}", self.secret))
    }
}

fn basic(credentials: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(credentials)
    )
}

/// `response` is the 401 that asks for Basic credentials.
fn ensure_unauthorized(response: &http::Response, what: &str) -> Result<()> {
    ensure!(response.status == 401, "{what}: {}", response.describe());
    ensure!(
        response.header("www-authenticate") == Some("Basic realm=\"pmcache\""),
        "{what}: no Basic challenge: {}",
        response.describe()
    );
    Ok(())
}

/// Neither pmcache's log, nor its metrics, nor any file in its data directory holds `secret`.
fn ensure_secret_kept(case: &Case<impl Sized>, token: &Token) -> Result<()> {
    let log = case.pmcache().log_text();
    ensure!(
        !log.contains(&token.secret),
        "the token is in pmcache's log"
    );
    let metrics = http::get_with(
        &format!("{}/metrics", case.pmcache().base_url()),
        &[("Authorization", &token.bearer())],
    )?;
    ensure!(metrics.status == 200, "{}", metrics.describe());
    ensure!(
        !metrics.text().contains(&token.secret),
        "the token is in /metrics"
    );
    ensure_not_in_files(&case.data_dir(), token.secret.as_bytes())
}

fn ensure_not_in_files(dir: &Path, needle: &[u8]) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            ensure_not_in_files(&path, needle)?;
        } else if path.is_file() {
            let bytes = std::fs::read(&path)?;
            ensure!(
                !bytes.windows(needle.len()).any(|window| window == needle),
                "the token is in {}",
                path.display()
            );
        }
    }
    Ok(())
}

/// Every request under `prefix` that pmcache did not refuse 401 was logged as granted `role`
/// through the token `name`.
fn ensure_logged_as(case: &Case<impl Sized>, prefix: &str, role: &str, name: &str) -> Result<()> {
    let requests: Vec<_> = case
        .pmcache()
        .events_named("request")
        .into_iter()
        .filter(|event| {
            event
                .text("path")
                .is_some_and(|path| path.starts_with(prefix))
        })
        .filter(|event| event.field("status").and_then(|s| s.as_u64()) != Some(401))
        .collect();
    ensure!(!requests.is_empty(), "no request under {prefix} was logged");
    for event in &requests {
        ensure!(
            event.text("role").as_deref() == Some(role)
                && event.text("token").as_deref() == Some(name),
            "{:?} was not logged as role {role} through token {name}: role {:?}, token {:?}",
            event.text("path"),
            event.text("role"),
            event.text("token")
        );
    }
    Ok(())
}

#[test]
fn every_mount_refuses_a_missing_or_wrong_token_and_pip_passes_the_right_one_in_its_index_url()
-> Result<()> {
    let token = Token::new("post-merge", "populate")?;
    let case = Case::new(PypiUpstream::start(PageFormat::Json)?)?;
    // Every frontend on, each pointed at a loopback fixture: the refusals come before any of
    // them, and nothing may leave loopback.
    let index = case.upstream.index_url();
    let other = format!("http://{}/", case.upstream.index_addr());
    let trusted = case.upstream.trusted_hosts();
    let mut settings = vec![
        ("PMCACHE_PYPI_UPSTREAM", index.as_str()),
        ("PMCACHE_UPSTREAM_TRUSTED_HOSTS", trusted.as_str()),
        ("PMCACHE_NPM_UPSTREAM", other.as_str()),
        ("PMCACHE_RUBYGEMS_UPSTREAM", other.as_str()),
        ("PMCACHE_PACKAGIST_UPSTREAM", other.as_str()),
    ];
    settings.extend(token.settings());
    let case = case.serve(&settings)?;
    let base = case.pmcache().base_url().to_owned();

    let wrong_bearer = "Bearer not-the-token".to_owned();
    let wrong_basic = basic("ci:not-the-token");
    let token_as_user = basic(&format!("{}:", token.secret));
    for path in [
        "/pypi/simple/demo-app/",
        "/npm/demo-left",
        "/npm/@demo%2fscoped",
        "/rubygems/info/rake",
        "/rubygems/gems/rake-13.0.0.gem",
        "/packagist/packages.json",
        "/packagist/p2/demo/lib.json",
        "/metrics",
        "/no-such-route",
    ] {
        let url = format!("{base}{path}");
        ensure_unauthorized(&http::get(&url)?, &format!("{path} without a token"))?;
        for wrong in [&wrong_bearer, &wrong_basic, &token_as_user] {
            let response = http::get_with(&url, &[("Authorization", wrong)])?;
            ensure_unauthorized(&response, &format!("{path} with a wrong token"))?;
            ensure!(
                !response.text().contains(&token.secret),
                "a 401 body quotes the token"
            );
        }
    }
    let health = http::get(&format!("{base}/healthz"))?;
    ensure!(health.status == 200, "{}", health.describe());

    let page = format!("{base}/pypi/simple/demo-app/");
    for right in [token.bearer(), token.basic("anyone"), token.basic("")] {
        let response = http::get_with(&page, &[("Authorization", &right)])?;
        ensure!(response.status == 200, "{}", response.describe());
    }

    // pip's own credential setting: user and token in the index URL. It sends them with every
    // request to that host, the file downloads included.
    let venv = Venv::create(&case.path("pip"))?;
    let index_url =
        case.index_url()
            .replacen("http://", &format!("http://ci:{}@", token.secret), 1);
    venv.install(&index_url, &["demo-app"])?
        .ensure_success("pip install with the token in the index URL")?;
    check_demo_app_imports(&venv)?;
    ensure_logged_as(&case, "/pypi/files/", "populate", "post-merge")?;

    let metrics = http::get_with(
        &format!("{base}/metrics"),
        &[("Authorization", &token.bearer())],
    )?
    .text();
    ensure!(
        metrics.contains("status=\"401\",role=\"none\"")
            && metrics.contains("status=\"200\",role=\"populate\""),
        "pmcache_requests_total lacks the role label:\n{metrics}"
    );
    ensure_secret_kept(&case, &token)?;
    case.ensure_no_egress()
}

#[test]
fn npm_passes_the_token_from_its_userconfig() -> Result<()> {
    let token = Token::new("gate", "populate")?;
    let mut settings = vec![("PMCACHE_NPM_METADATA_TTL", "0s")];
    settings.extend(token.settings());
    let case = Case::npm(NpmUpstream::start()?, &settings)?;
    let registry = case.registry();

    let project = new_project(&case.path("anonymous").join("project"), None)?;
    let sandbox = Sandbox::create(
        &case.path("anonymous").join("client"),
        &registry,
        &case.trap,
    )?;
    sandbox
        .npm(&project, &["install"])?
        .ensure_failure("npm install without a token")?;

    let project = new_project(&case.path("trusted").join("project"), None)?;
    let sandbox = Sandbox::create(&case.path("trusted").join("client"), &registry, &case.trap)?;
    // npm's per-registry credential: the registry URL without its scheme, then `:_authToken`.
    let nerf_dart = registry.trim_start_matches("http:");
    sandbox.append_npmrc(&format!("{nerf_dart}:_authToken={}\n", token.secret))?;
    sandbox
        .npm(&project, &["install"])?
        .ensure_success("npm install with _authToken")?;
    ensure_demo_tree(&sandbox, &project)?;
    ensure_logged_as(&case, "/npm/", "populate", "gate")?;
    let statuses: Vec<u16> = case
        .pmcache()
        .requests()
        .iter()
        .map(|request| request.status)
        .collect();
    ensure!(
        statuses.contains(&401),
        "the tokenless install was not refused: {statuses:?}"
    );

    // Relayed endpoints (search, audit) go on to the upstream; pmcache's token must not.
    let search = http::get_with(
        &format!("{registry}-/v1/search?text=demo&size=20&from=0"),
        &[("Authorization", &token.bearer())],
    )?;
    ensure!(search.status == 200, "{}", search.describe());
    let upstream = case.upstream.requests_since(0);
    ensure!(
        upstream.iter().any(|logged| logged.kind == Kind::Search),
        "the search never reached the upstream:\n{}",
        case.upstream.request_log()
    );
    ensure!(
        upstream.iter().all(|logged| !logged.authorization),
        "pmcache's token went on to the upstream:\n{}",
        case.upstream.request_log()
    );
    ensure_secret_kept(&case, &token)?;
    case.ensure_no_egress()
}

/// `output` (a client's) shows that pmcache refused it with a 401.
fn ensure_mentions_401(output: &str, what: &str) -> Result<()> {
    ensure!(
        output.contains("401"),
        "{what} failed without naming the 401:\n{output}"
    );
    Ok(())
}

/// Some request under `prefix` that pmcache logged after the `mark`-th was answered 200.
fn ensure_fetched_since(
    case: &Case<impl Sized>,
    mark: usize,
    prefix: &str,
    what: &str,
) -> Result<()> {
    let later = &case.pmcache().requests()[mark..];
    ensure!(
        later
            .iter()
            .any(|request| request.path.starts_with(prefix) && request.status == 200),
        "{what} fetched nothing under {prefix} through pmcache: {later:?}"
    );
    Ok(())
}

/// The requests pmcache refused with a 401.
fn refused(case: &Case<impl Sized>) -> usize {
    case.pmcache()
        .requests()
        .iter()
        .filter(|request| request.status == 401)
        .count()
}

#[test]
fn gem_passes_the_token_in_its_source_url() -> Result<()> {
    let token = Token::new("release", "populate")?;
    let case = Case::rubygems_with("1m", &token.settings())?;
    let source = format!("{}/rubygems/", case.pmcache().base_url());

    let anonymous = GemSandbox::create(&case.path("anonymous"), &case.trap)?;
    let run = anonymous
        .gem_install(&source, &[GEM_APP])?
        .ensure_failure("gem install without a token")?;
    ensure_mentions_401(&run.output, "gem install without a token")?;
    ensure!(refused(&case) > 0, "pmcache refused nothing");

    // gem's own credential setting: user and token in the source URL, sent as Basic.
    let trusted = GemSandbox::create(&case.path("trusted"), &case.trap)?;
    let with_token = source.replacen("http://", &format!("http://ci:{}@", token.secret), 1);
    trusted
        .gem_install(&with_token, &[GEM_APP])?
        .ensure_success("gem install with the token in the source URL")?;
    let loaded = trusted.ruby("require \"proxfix_app\"; puts ProxfixApp::VERSION")?;
    ensure!(
        loaded == "0.1.0",
        "unexpected proxfix_app loaded: {loaded:?}"
    );
    ensure_cached_gem(&trusted.gem_home(), "proxfix_app-0.1.0")?;
    ensure_logged_as(&case, "/rubygems/gems/", "populate", "release")?;
    ensure_secret_kept(&case, &token)?;
    case.ensure_no_egress()
}

/// A Composer project on `case`'s pmcache, in its own sandbox whose `auth.json` is `auth` (none
/// when `None`), requiring the fixture app.
fn composer_install(
    case: &Case<PackagistUpstream>,
    name: &str,
    auth: Option<serde_json::Value>,
) -> Result<(ComposerSandbox, ComposerProject, ClientRun)> {
    let sandbox = ComposerSandbox::create(&case.path(name).join("client"), &case.trap)?;
    if let Some(auth) = auth {
        std::fs::write(
            sandbox.composer_home().join("auth.json"),
            serde_json::to_string_pretty(&auth)?,
        )?;
    }
    let repository = format!("{}/packagist", case.pmcache().base_url());
    let project = ComposerProject::create(
        &case.path(name).join("project"),
        &repository,
        &[(COMPOSER_APP, "^1.0")],
        None,
    )?;
    let run = sandbox.install(&project)?;
    Ok((sandbox, project, run))
}

#[test]
fn composer_passes_the_token_from_auth_json_as_http_basic_or_bearer() -> Result<()> {
    let token = Token::new("deploy", "populate")?;
    let settings: Vec<(String, String)> = token
        .settings()
        .iter()
        .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
        .collect();
    let case = Case::packagist("1m", |_| settings)?;
    // Composer keys its credentials by host, with the port when it is not the default.
    let origin = case
        .pmcache()
        .base_url()
        .trim_start_matches("http://")
        .to_owned();

    let (_, _, run) = composer_install(&case, "anonymous", None)?;
    let run = run.ensure_failure("composer install without a token")?;
    ensure_mentions_401(&run.output, "composer install without a token")?;
    ensure!(refused(&case) > 0, "pmcache refused nothing");

    let basic = serde_json::json!({
        "http-basic": { origin.as_str(): { "username": "ci", "password": token.secret } }
    });
    let (sandbox, project, run) = composer_install(&case, "basic", Some(basic))?;
    run.ensure_success("composer install with http-basic in auth.json")?;
    let version = sandbox.php_constant(&project, "Proxfix\\App\\Version::VERSION")?;
    ensure!(version == "1.0.0", "unexpected app version {version:?}");
    ensure_logged_as(&case, "/packagist/dists/", "populate", "deploy")?;

    // A fresh sandbox (empty Composer cache), so every request goes to pmcache again.
    let bearer = serde_json::json!({ "bearer": { origin.as_str(): token.secret } });
    let mark = case.pmcache().requests().len();
    let (sandbox, project, run) = composer_install(&case, "bearer", Some(bearer))?;
    run.ensure_success("composer install with bearer in auth.json")?;
    let version = sandbox.php_constant(&project, "Proxfix\\App\\Version::VERSION")?;
    ensure!(version == "1.0.0", "unexpected app version {version:?}");
    ensure_fetched_since(&case, mark, "/packagist/dists/", "the bearer install")?;
    ensure_logged_as(&case, "/packagist/", "populate", "deploy")?;
    ensure_secret_kept(&case, &token)?;
    case.ensure_no_egress()
}

/// uv, with no credentials of any kind, fails to install `packages` on pmcache's 401.
fn ensure_uv_refused(case: &Case<PypiUpstream>, packages: &[&str], what: &str) -> Result<()> {
    let anonymous = Uv::create(&case.path("anonymous"), None, &case.trap)?;
    let venv = anonymous.venv("venv")?;
    let run = anonymous
        .pip_install(&venv, &case.index_url(), packages)?
        .ensure_failure(what)?;
    ensure_mentions_401(&run.output, what)?;
    ensure!(refused(case) > 0, "pmcache refused nothing");
    Ok(())
}

/// The venv uv installed the fixture's demo-lib and demo-util wheels into imports them.
fn ensure_uv_installed_demo_wheels(venv: &Path) -> Result<()> {
    let output = Command::new(venv.join("bin/python"))
        .args(["-c", "import demo_lib, demo_util; print(demo_lib.VERSION)"])
        .env_clear()
        .output()?;
    let version = String::from_utf8_lossy(&output.stdout);
    ensure!(
        output.status.success() && version.trim() == "1.1.0",
        "uv installed demo_lib {version:?}: {output:?}"
    );
    Ok(())
}

#[test]
fn uv_passes_the_token_in_its_index_url() -> Result<()> {
    let token = Token::new("merge-queue", "populate")?;
    let case = Case::pypi(PageFormat::Json, &token.settings())?;
    let index = case.index_url();
    // Wheels only: uv would build the fixture's sdist in an isolated environment.
    let packages = ["demo-lib", "demo-util"];

    ensure_uv_refused(&case, &packages, "uv pip install without a token")?;

    // uv's own credential setting: user and token in the index URL; uv sends them to that
    // host, the file downloads included.
    let trusted = Uv::create(&case.path("trusted"), None, &case.trap)?;
    let venv = trusted.venv("venv")?;
    let with_token = index.replacen("http://", &format!("http://ci:{}@", token.secret), 1);
    trusted
        .pip_install(&venv, &with_token, &packages)?
        .ensure_success("uv pip install with the token in the index URL")?;
    ensure_uv_installed_demo_wheels(&venv)?;
    ensure_logged_as(&case, "/pypi/files/", "populate", "merge-queue")?;
    ensure_secret_kept(&case, &token)?;
    case.ensure_no_egress()
}

/// pnpm (or another client reading `.npmrc`) installs the npm demo project through pmcache with `_authToken` in the
/// sandbox's `.npmrc` (none when `token` is `None`).
fn npm_like_install(
    case: &Case<NpmUpstream>,
    name: &str,
    token: Option<&Token>,
    install: fn(&Sandbox, &Path) -> Result<ClientRun>,
) -> Result<(Sandbox, std::path::PathBuf, ClientRun)> {
    let registry = case.registry();
    let project = new_project(&case.path(name).join("project"), None)?;
    let sandbox = Sandbox::create(&case.path(name).join("client"), &registry, &case.trap)?;
    if let Some(token) = token {
        let nerf_dart = registry.trim_start_matches("http:");
        sandbox.append_npmrc(&format!("{nerf_dart}:_authToken={}\n", token.secret))?;
    }
    let run = install(&sandbox, &project)?;
    Ok((sandbox, project, run))
}

/// Without a token `install` fails on a 401; with `_authToken` it installs the demo tree, every
/// tarball fetched as the token's role.
fn ensure_npm_like_client_passes_the_token(
    label: &str,
    install: fn(&Sandbox, &Path) -> Result<ClientRun>,
) -> Result<()> {
    let token = Token::new("gate", "populate")?;
    let mut settings = vec![("PMCACHE_NPM_METADATA_TTL", "0s")];
    settings.extend(token.settings());
    let case = Case::npm(NpmUpstream::start()?, &settings)?;

    let (_, _, run) = npm_like_install(&case, "anonymous", None, install)?;
    let run = run.ensure_failure(&format!("{label} install without a token"))?;
    ensure_mentions_401(&run.output, &format!("{label} install without a token"))?;
    ensure!(refused(&case) > 0, "pmcache refused nothing");

    let (sandbox, project, run) = npm_like_install(&case, "trusted", Some(&token), install)?;
    run.ensure_success(&format!("{label} install with _authToken"))?;
    ensure_demo_tree(&sandbox, &project)?;
    ensure_logged_as(&case, "/npm/", "populate", "gate")?;
    ensure_secret_kept(&case, &token)?;
    case.ensure_no_egress()
}

#[test]
fn pnpm_passes_the_token_from_its_npmrc() -> Result<()> {
    ensure_npm_like_client_passes_the_token("pnpm", Sandbox::pnpm_install)
}

/// yarn 1 sends the `_authToken` of the registry's `.npmrc` entry only with `always-auth=true`
/// (without it, unscoped packuments are asked for without credentials and refused).
#[test]
fn yarn_passes_the_token_from_its_npmrc_with_always_auth() -> Result<()> {
    fn install(sandbox: &Sandbox, project: &Path) -> Result<ClientRun> {
        sandbox.append_npmrc("always-auth=true\n")?;
        sandbox.yarn_install(project)
    }
    ensure_npm_like_client_passes_the_token("yarn", install)
}
