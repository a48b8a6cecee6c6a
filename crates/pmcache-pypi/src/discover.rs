//! `upstream = "auto"`: find the index the local pip would use, without naming any registry
//! host in pmcache itself. pip's merged configuration (files and `PIP_*` variables) comes from
//! `pip config list`; its built-in default index comes from pip itself.

use std::process::{Command, Stdio};

use url::Url;

/// Where the discovered index came from, for the one log line that reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Discovered {
    /// The index's simple-API base URL, as pip's configuration names it.
    pub url: Url,
    /// Which setting named it (`pip config <key>`) or pip's built-in default.
    pub source: String,
}

/// pip's configuration keys for the index, best first (`cli/parser.py` orders env over
/// command sections over `[global]`).
const KEYS: [&str; 3] = [":env:.index-url", "install.index-url", "global.index-url"];

/// The python that runs pip, tried in order.
const PYTHONS: [&str; 2] = ["python3", "python"];

/// Finds the local pip's index. `is_self` recognises pmcache's own address, so that a CI job
/// exporting `PIP_INDEX_URL` at pmcache does not make pmcache its own upstream.
pub fn discover(is_self: &dyn Fn(&Url) -> bool) -> Result<Discovered, String> {
    let python = PYTHONS
        .iter()
        .copied()
        .find(|python| run(python, &["-m", "pip", "--version"]).is_some())
        .ok_or("no python with pip found on PATH")?;
    let listing = run(python, &["-m", "pip", "config", "list"]).unwrap_or_default();
    if let Some((key, url)) = configured_index(&listing) {
        if !is_self(&url) {
            return Ok(Discovered {
                url,
                source: format!("pip config {key}"),
            });
        }
        tracing::warn!(%url, "pip's configured index is pmcache itself; using pip's default");
    }
    let default = run(
        python,
        &[
            "-c",
            "from pip._internal.models.index import PyPI; print(PyPI.simple_url)",
        ],
    )
    .ok_or("pip's built-in default index could not be read")?;
    let url = pmcache_proxy::base_url(default.trim())
        .ok_or("pip's built-in default index is not a URL")?;
    Ok(Discovered {
        url,
        source: "pip's built-in default".to_owned(),
    })
}

/// The best index-url in `pip config list` output (`section.key='value'` per line).
pub fn configured_index(listing: &str) -> Option<(&'static str, Url)> {
    KEYS.iter().find_map(|key| {
        listing.lines().find_map(|line| {
            let value = line.strip_prefix(key)?.strip_prefix('=')?;
            let value = value.trim().trim_matches(|c| c == '\'' || c == '"');
            // A multi-value setting lists one URL per line; the index is the first.
            let first = value.split_whitespace().next()?;
            pmcache_proxy::base_url(first).map(|url| (*key, url))
        })
    })
}

fn run(program: &str, args: &[&str]) -> Option<String> {
    let output = Command::new(program)
        .args(args)
        .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_beats_command_section_beats_global() {
        let listing = "global.index-url='http://127.0.0.1:1/global/'\n\
                       install.index-url='http://127.0.0.1:2/install'\n\
                       :env:.index-url='http://127.0.0.1:3/env/'\n";
        let (key, url) = configured_index(listing).unwrap();
        assert_eq!(key, ":env:.index-url");
        assert_eq!(url.as_str(), "http://127.0.0.1:3/env/");
        let (key, url) = configured_index(&listing.replace(":env:", "#")).unwrap();
        assert_eq!(key, "install.index-url");
        assert_eq!(url.as_str(), "http://127.0.0.1:2/install/");
    }

    #[test]
    fn nothing_configured_means_none() {
        assert_eq!(configured_index(""), None);
        assert_eq!(configured_index("global.timeout='5'\n"), None);
        assert_eq!(configured_index("global.index-url='not a url'\n"), None);
    }
}
