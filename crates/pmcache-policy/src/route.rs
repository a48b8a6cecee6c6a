//! Private routes (`[[routes]]`): names that never go to the ecosystem's public upstream, but to
//! a private one or to none. The dependency-confusion guard.

use url::Url;

use crate::config::RouteConfig;
use crate::{Ecosystem, Error, Pattern, Result};

/// The `upstream` value that sends a route nowhere.
const NONE: &str = "none";

/// Where a route's packages come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Upstream {
    /// Nowhere: pmcache answers 404 itself.
    None,
    /// This base URL (http or https, ending in `/`), in place of the ecosystem's upstream.
    Url(Url),
}

/// A `[[routes]]` entry, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    index: usize,
    ecosystem: Ecosystem,
    names: Vec<Pattern>,
    upstream: Upstream,
}

impl Route {
    /// Checks the entry at `index` of `[[routes]]`.
    pub(crate) fn new(index: usize, config: &RouteConfig) -> Result<Route> {
        let ecosystem: Ecosystem =
            config
                .ecosystem
                .parse()
                .map_err(|error| Error::RouteEcosystem {
                    index,
                    error: format!("{error}"),
                })?;
        if config.names.is_empty() {
            return Err(Error::RouteWithoutNames { index });
        }
        let names = config
            .names
            .iter()
            .map(|text| Pattern::parse_name(text, Some(ecosystem)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| Error::Pattern {
                key: format!("routes[{index}].names"),
                error,
            })?;
        let upstream = upstream(&config.upstream).map_err(|why| Error::RouteUpstream {
            index,
            upstream: config.upstream.clone(),
            why,
        })?;
        Ok(Route {
            index,
            ecosystem,
            names,
            upstream,
        })
    }

    /// The entry's place in `[[routes]]`, from 0: `routes[2]` in logs and errors.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The ecosystem the route is for.
    pub fn ecosystem(&self) -> Ecosystem {
        self.ecosystem
    }

    /// Where the route's packages come from.
    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    /// Whether the route takes the package `name` of `ecosystem`, in any spelling the
    /// ecosystem treats as the same name.
    pub fn takes(&self, ecosystem: Ecosystem, name: &str) -> bool {
        self.names
            .iter()
            .any(|pattern| pattern.matches_name(ecosystem, name))
    }
}

/// `none`, or an http(s) base URL without user info, query or fragment, given a trailing `/`
/// so that package paths join below it. (pmcache checks it further, as it does frontends'
/// upstreams: addresses, and that it is not pmcache itself.)
fn upstream(text: &str) -> Result<Upstream, String> {
    if text == NONE {
        return Ok(Upstream::None);
    }
    let mut url = upstream_url(text, NONE)?;
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(Upstream::Url(url))
}

/// `text` as an upstream URL package paths can be joined below (a frontend's or a route's);
/// else why not, with `alternative` (the other value the setting takes) named in the hint.
pub fn upstream_url(text: &str, alternative: &str) -> Result<Url, String> {
    let url = Url::parse(text.trim()).map_err(|error| {
        format!("it is not a URL ({error}); write http(s)://host/path/ or \"{alternative}\"")
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("its scheme is {}, not http or https", url.scheme()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        // pmcache sends no credentials from a URL; they would only reach its logs.
        return Err(
            "it carries user info (user:password@), which pmcache does not send".to_owned(),
        );
    }
    if url.query().is_some() || url.fragment().is_some() {
        // Package paths are joined to the URL, which drops both.
        return Err(
            "a query or fragment would be lost when package paths are joined to it".to_owned(),
        );
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(ecosystem: &str, names: &[&str], upstream: &str) -> Result<Route> {
        Route::new(
            3,
            &RouteConfig {
                ecosystem: ecosystem.to_owned(),
                names: names.iter().map(|name| (*name).to_owned()).collect(),
                upstream: upstream.to_owned(),
            },
        )
    }

    #[test]
    fn routes_take_their_names_in_every_spelling() {
        let npm = route(
            "npm",
            &["@acme/*", "npm:acme-cli"],
            "https://npm.internal.example/",
        )
        .unwrap();
        assert!(npm.takes(Ecosystem::Npm, "@acme/tool"));
        assert!(npm.takes(Ecosystem::Npm, "acme-cli"));
        assert!(!npm.takes(Ecosystem::Npm, "@acme-other/tool"));
        assert!(!npm.takes(Ecosystem::Pypi, "acme-cli"));
        assert_eq!(npm.index(), 3);
        let pypi = route("pypi", &["acme-*"], "none").unwrap();
        assert!(pypi.takes(Ecosystem::Pypi, "Acme_Tool"));
        assert!(pypi.takes(Ecosystem::Pypi, "acme.tool"));
        assert_eq!(pypi.upstream(), &Upstream::None);
        let composer = route("packagist", &["acme/*"], "http://127.0.0.1:8080/composer").unwrap();
        assert!(composer.takes(Ecosystem::Packagist, "ACME/Tool"));
        assert_eq!(
            composer.upstream(),
            &Upstream::Url(Url::parse("http://127.0.0.1:8080/composer/").unwrap())
        );
    }

    #[test]
    fn bad_routes_name_the_entry_and_why() {
        for (result, message) in [
            (
                route("crates", &["x"], "none"),
                "routes[3].ecosystem: \"crates\" is not an ecosystem: write pypi, npm, rubygems or packagist",
            ),
            (
                route("npm", &[], "none"),
                "routes[3].names is empty: a route names at least one package",
            ),
            (
                route("npm", &["@acme/tool@1.0.0"], "none"),
                "routes[3].names: \"@acme/tool@1.0.0\" is not a pattern: this setting takes names only, without @version",
            ),
            (
                route("npm", &["pypi:acme"], "none"),
                "routes[3].names: \"pypi:acme\" is not a pattern: it names pypi in a setting of the npm ecosystem",
            ),
            (
                route("npm", &["@acme/*"], "ftp://127.0.0.1/"),
                "routes[3].upstream = \"ftp://127.0.0.1/\" cannot be used: its scheme is ftp, not http or https",
            ),
            (
                route("npm", &["@acme/*"], "None"),
                "routes[3].upstream = \"None\" cannot be used: it is not a URL (relative URL without a base); write http(s)://host/path/ or \"none\"",
            ),
            (
                route("npm", &["@acme/*"], "http://ci:secret@127.0.0.1/"),
                "routes[3].upstream = \"http://ci:secret@127.0.0.1/\" cannot be used: it carries user info (user:password@), which pmcache does not send",
            ),
            (
                route("npm", &["@acme/*"], "http://127.0.0.1/?token=x"),
                "routes[3].upstream = \"http://127.0.0.1/?token=x\" cannot be used: a query or fragment would be lost when package paths are joined to it",
            ),
        ] {
            assert_eq!(result.unwrap_err().to_string(), message);
        }
    }
}
