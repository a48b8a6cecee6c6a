//! Clients that keep pmcache's token in a credential store of their own rather than in the URL:
//! pip and uv reading `~/.netrc`, Bundler reading its global config or the `BUNDLE_<HOST>`
//! variable. With `anonymous = "none"`, each install fails on pmcache's 401 without the store's
//! entry and succeeds with it, and the token stays out of pmcache's log and data directory.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use anyhow::{Result, ensure};

use super::{Token, ensure_logged_as, ensure_secret_kept, refused};
use crate::pypi::check_demo_app_imports;
use crate::support::case::Case;
use crate::support::gem::{GemfileSource, Project, Sandbox as GemSandbox};
use crate::support::pip::Venv;
use crate::support::pypi_upstream::PageFormat;
use crate::support::rubygems_gems::APP as GEM_APP;
use crate::support::rubygems_upstream::RubygemsUpstream;
use crate::support::uv::Uv;

/// Writes `home/.netrc` giving `ci` and the token for 127.0.0.1, the host (without port) both
/// pip (through requests) and uv look a URL up by. Mode 0600: Python's `netrc` refuses a
/// password in a default-location file that others can read.
fn write_netrc(home: &Path, token: &Token) -> Result<()> {
    let path = home.join(".netrc");
    std::fs::write(
        &path,
        format!("machine 127.0.0.1 login ci password {}\n", token.secret),
    )?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}

#[test]
fn pip_passes_the_token_from_its_netrc() -> Result<()> {
    let token = Token::new("post-merge", "populate")?;
    let case = Case::pypi(PageFormat::Json, &token.settings())?;
    // No credentials in the URL: they come from the netrc or not at all.
    let index = case.index_url();

    let anonymous = Venv::create(&case.path("anonymous"))?;
    let run = anonymous
        .install(&index, &["demo-app"])?
        .ensure_failure("pip install without a netrc")?;
    // pip logs the refused project page only with `-v`; at its default verbosity it says
    // `from versions: none`. pmcache refused every request it made.
    ensure!(
        run.output.contains("from versions: none"),
        "pip install without a netrc failed for another reason:\n{}",
        run.output
    );
    let statuses: Vec<u16> = case
        .pmcache()
        .requests()
        .iter()
        .map(|request| request.status)
        .collect();
    ensure!(
        !statuses.is_empty() && statuses.iter().all(|status| *status == 401),
        "pmcache did not refuse the tokenless pip with 401s: {statuses:?}"
    );

    // `Venv` makes `ROOT/home` pip's HOME.
    let root = case.path("trusted");
    std::fs::create_dir_all(root.join("home"))?;
    write_netrc(&root.join("home"), &token)?;
    let trusted = Venv::create(&root)?;
    trusted
        .install(&index, &["demo-app"])?
        .ensure_success("pip install with the token in ~/.netrc")?;
    check_demo_app_imports(&trusted)?;
    ensure_logged_as(&case, "/pypi/files/", "populate", "post-merge")?;
    ensure_secret_kept(&case, &token)?;
    case.ensure_no_egress()
}

#[test]
fn uv_passes_the_token_from_its_netrc() -> Result<()> {
    let token = Token::new("merge-queue", "populate")?;
    let case = Case::pypi(PageFormat::Json, &token.settings())?;
    let index = case.index_url();
    // Wheels only: uv would build the fixture's sdist in an isolated environment.
    let packages = ["demo-lib", "demo-util"];

    super::ensure_uv_refused(&case, &packages, "uv pip install without a netrc")?;

    // `Uv` makes `ROOT/home` uv's HOME; without `NETRC` set, uv reads `~/.netrc`.
    let root = case.path("trusted");
    let trusted = Uv::create(&root, None, &case.trap)?;
    write_netrc(&root.join("home"), &token)?;
    let venv = trusted.venv("venv")?;
    trusted
        .pip_install(&venv, &index, &packages)?
        .ensure_success("uv pip install with the token in ~/.netrc")?;
    super::ensure_uv_installed_demo_wheels(&venv)?;
    ensure_logged_as(&case, "/pypi/files/", "populate", "merge-queue")?;
    ensure_secret_kept(&case, &token)?;
    case.ensure_no_egress()
}

/// The variable Bundler (`Settings.key_for`) reads credentials for host 127.0.0.1 from: the host
/// without its port, `.` written `__`, upper case.
const BUNDLE_LOOPBACK_CREDENTIALS: &str = "BUNDLE_127__0__0__1";

/// A sandbox and a project named `name` whose Gemfile's source is `source` (no credentials in
/// it), asking for the fixture app.
fn bundle_project(
    case: &Case<RubygemsUpstream>,
    name: &str,
    source: &str,
) -> Result<(GemSandbox, Project)> {
    let sandbox = GemSandbox::create(&case.path(name).join("client"), &case.trap)?;
    let project = Project::create(
        &case.path(name).join("project"),
        GemfileSource::Direct(source),
        &[(GEM_APP, &[])],
    )?;
    Ok((sandbox, project))
}

/// The project's bundle loads the fixture app.
fn ensure_bundled(sandbox: &GemSandbox, project: &Project, env: &[(&str, &str)]) -> Result<()> {
    let loaded = sandbox.bundle_exec_ruby(
        &project.dir,
        "require \"proxfix_app\"; puts ProxfixApp::VERSION",
        &project.env(env),
    )?;
    ensure!(
        loaded == "0.1.0",
        "unexpected proxfix_app loaded: {loaded:?}"
    );
    Ok(())
}

#[test]
fn bundler_passes_the_token_from_its_global_config_or_the_host_variable() -> Result<()> {
    let token = Token::new("gate", "populate")?;
    let case = Case::rubygems_with("1m", &token.settings())?;
    let source = format!("{}/rubygems/", case.pmcache().base_url());
    let credentials = format!("ci:{}", token.secret);

    let (sandbox, project) = bundle_project(&case, "anonymous", &source)?;
    let run = sandbox
        .bundle(&project.dir, &["install"], &project.env(&[]))?
        .ensure_failure("bundle install without credentials")?;
    // Bundler turns the 401 into its own message, which names the variable it would read.
    ensure!(
        run.output
            .contains("Authentication is required for 127.0.0.1")
            && run.output.contains(BUNDLE_LOOPBACK_CREDENTIALS),
        "bundle install failed without naming the missing credentials:\n{}",
        run.output
    );
    ensure!(refused(&case) > 0, "pmcache refused nothing");

    // Bundler's own credential setting, in the sandbox's user config (`BUNDLE_USER_CONFIG`).
    let (sandbox, project) = bundle_project(&case, "config", &source)?;
    sandbox
        .bundle(
            &project.dir,
            &["config", "set", "--global", &source, &credentials],
            &[],
        )?
        .ensure_success("bundle config set --global")?;
    sandbox
        .bundle(&project.dir, &["install"], &project.env(&[]))?
        .ensure_success("bundle install with the token in Bundler's global config")?;
    ensure_bundled(&sandbox, &project, &[])?;
    ensure!(
        !project.lockfile()?.contains(&token.secret),
        "Bundler wrote the token into Gemfile.lock"
    );
    ensure_logged_as(&case, "/rubygems/", "populate", "gate")?;

    // The same credentials from the environment alone, in a fresh sandbox (no config, no
    // compact index cache, so every request goes to pmcache again).
    let mark = case.pmcache().requests().len();
    let (sandbox, project) = bundle_project(&case, "environment", &source)?;
    let env = [(BUNDLE_LOOPBACK_CREDENTIALS, credentials.as_str())];
    sandbox
        .bundle(&project.dir, &["install"], &project.env(&env))?
        .ensure_success("bundle install with the token in BUNDLE_127__0__0__1")?;
    ensure_bundled(&sandbox, &project, &env)?;
    super::ensure_fetched_since(
        &case,
        mark,
        "/rubygems/gems/",
        "the install with the variable",
    )?;
    ensure_logged_as(&case, "/rubygems/", "populate", "gate")?;
    ensure_secret_kept(&case, &token)?;
    case.ensure_no_egress()
}
