//! `upstream = "auto"`: the registry the local npm would use, as `npm config get registry`
//! reports it (command line aside, that applies npm's whole precedence: environment, project,
//! user, global and built-in config), so no registry host is written into pmcache.

use std::process::{Command, Stdio};

use url::Url;

/// Where the discovered registry came from, for the one log line that reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Discovered {
    /// The registry's base URL, as npm reports it.
    pub url: Url,
    /// Which npm setting named it ("npm config get registry" or npm's built-in default).
    pub source: String,
}

/// Finds the local npm's registry. `is_self` recognises pmcache's own address: a CI job that
/// exports `npm_config_registry` at pmcache must not make pmcache its own upstream.
pub fn discover(is_self: &dyn Fn(&Url) -> bool) -> Result<Discovered, String> {
    let configured = npm_registry(false)?;
    if !is_self(&configured) {
        return Ok(Discovered {
            url: configured,
            source: "npm config get registry".to_owned(),
        });
    }
    tracing::warn!(url = %configured, "npm's configured registry is pmcache itself; using npm's default");
    let default = npm_registry(true)?;
    if is_self(&default) {
        return Err("npm's only registry is pmcache itself".to_owned());
    }
    Ok(Discovered {
        url: default,
        source: "npm's built-in default".to_owned(),
    })
}

/// `npm config get registry`; with `defaults_only`, ignoring every config file and variable.
fn npm_registry(defaults_only: bool) -> Result<Url, String> {
    let mut command = Command::new("npm");
    command.args(["config", "get", "registry"]);
    if defaults_only {
        command.args(["--userconfig", "/dev/null", "--globalconfig", "/dev/null"]);
        for (name, _) in std::env::vars() {
            if name.to_ascii_lowercase().starts_with("npm_config_") {
                command.env_remove(name);
            }
        }
    }
    let output = command
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map_err(|e| format!("npm could not be run: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "`npm config get registry` failed ({})",
            output.status
        ));
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let text = text.trim();
    pmcache_proxy::base_url(text)
        .ok_or_else(|| format!("npm's registry {text:?} is not an http(s) URL"))
}
