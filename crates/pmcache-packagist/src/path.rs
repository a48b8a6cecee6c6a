//! What a path below `/packagist` asks for.

use crate::error::{Error, Result};
use crate::name::PackageName;

/// The longest archive name accepted in a dist path (references are commit hashes or branch
/// names).
const MAX_FILE_LEN: usize = 512;

/// A repository route.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// `/packages.json`: the repository root file.
    PackagesJson,
    /// `/p2/VENDOR/NAME.json` (tagged releases) or `/p2/VENDOR/NAME~dev.json` (branches).
    P2 {
        /// The package the file describes.
        package: PackageName,
        /// `~dev`: the branch versions rather than the tagged releases.
        dev: bool,
    },
    /// `/dists/VENDOR/NAME/REFERENCE.TYPE` (percent-decoded): one dist archive.
    Dist {
        /// The package the archive belongs to.
        package: PackageName,
        /// `REFERENCE.TYPE`, percent-decoded (a branch reference may hold `/`).
        file: String,
    },
    /// An endpoint relayed to (or, for notify-batch, answered for) the upstream URL that
    /// `packages.json` names, with `%package%` filled in when given.
    Endpoint {
        /// Which of the root file's endpoints.
        endpoint: Endpoint,
        /// The package filled in for `%package%` (providers API), if the route names one.
        package: Option<PackageName>,
    },
}

/// The endpoints of `packages.json` that pmcache serves at its own routes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `notify-batch` (`/downloads/`): where Composer reports installs, answered by pmcache.
    NotifyBatch,
    /// `search` (`/search.json`): `composer search`.
    Search,
    /// `list` (`/packages/list.json`): package names, filtered by vendor or type.
    List,
    /// `providers-api` (`/providers/VENDOR/NAME.json`): packages providing a virtual package.
    ProvidersApi,
    /// `security-advisories` (`/api/security-advisories/`): `composer audit`, by POST.
    SecurityAdvisories,
    /// `metadata-changes-url` (`/metadata/changes.json`): the feed of updated packages.
    MetadataChanges,
    /// Any other URL the root file held, numbered in document order (`/link/N`).
    Other(u32),
}

impl Endpoint {
    /// Its key among the upstream links kept with the root file (see `rewrite::ENDPOINTS`).
    pub fn link(self) -> String {
        let name = match self {
            Endpoint::NotifyBatch => "notify-batch",
            Endpoint::Search => "search",
            Endpoint::List => "list",
            Endpoint::ProvidersApi => "providers-api",
            Endpoint::SecurityAdvisories => "security-advisories.api-url",
            Endpoint::MetadataChanges => "metadata-changes-url",
            Endpoint::Other(index) => return format!("link/{index}"),
        };
        name.to_owned()
    }

    /// Whether clients POST to it: the advisories API takes the package list as a form, and
    /// pmcache cannot tell what unclassified links take.
    pub fn takes_posts(self) -> bool {
        matches!(self, Endpoint::SecurityAdvisories | Endpoint::Other(_))
    }
}

/// Classifies `path`, the request path below the mount point.
pub fn classify(path: &str) -> Result<Route> {
    let no_route = || Error::NoRoute {
        path: path.to_owned(),
    };
    let endpoint = |endpoint| Route::Endpoint {
        endpoint,
        package: None,
    };
    match path {
        "/packages.json" => return Ok(Route::PackagesJson),
        "/downloads/" | "/downloads" => return Ok(endpoint(Endpoint::NotifyBatch)),
        "/search.json" => return Ok(endpoint(Endpoint::Search)),
        "/packages/list.json" => return Ok(endpoint(Endpoint::List)),
        "/api/security-advisories/" | "/api/security-advisories" => {
            return Ok(endpoint(Endpoint::SecurityAdvisories));
        }
        "/metadata/changes.json" => return Ok(endpoint(Endpoint::MetadataChanges)),
        _ => {}
    }
    if let Some(file) = path
        .strip_prefix("/p2/")
        .and_then(|f| f.strip_suffix(".json"))
    {
        let (name, dev) = match file.strip_suffix("~dev") {
            Some(name) => (name, true),
            None => (file, false),
        };
        let package = PackageName::parse(name)?;
        return Ok(Route::P2 { package, dev });
    }
    if let Some(rest) = path.strip_prefix("/dists/") {
        let mut parts = rest.splitn(3, '/');
        let (Some(vendor), Some(name), Some(file)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(no_route());
        };
        let package = PackageName::parse(&format!("{vendor}/{name}"))?;
        let file = percent_encoding::percent_decode_str(file)
            .decode_utf8()
            .map_err(|_| no_route())?
            .into_owned();
        if !is_archive_name(&file) {
            return Err(no_route());
        }
        return Ok(Route::Dist { package, file });
    }
    if let Some(name) = path
        .strip_prefix("/providers/")
        .and_then(|f| f.strip_suffix(".json"))
    {
        return Ok(Route::Endpoint {
            endpoint: Endpoint::ProvidersApi,
            package: Some(PackageName::parse(name)?),
        });
    }
    if let Some(index) = path.strip_prefix("/link/")
        && !index.is_empty()
        && index.len() < 6
        && index.bytes().all(|b| b.is_ascii_digit())
        && let Ok(index) = index.parse()
    {
        return Ok(endpoint(Endpoint::Other(index)));
    }
    Err(no_route())
}

/// A decoded `REFERENCE.TYPE`: bounded, and, since branch references hold `/`, no part of it
/// `.` or `..`, with no backslash or control character (git refuses all of these in ref names,
/// and commit hashes have none), so it cannot mean a path elsewhere when it reaches a log or URL.
fn is_archive_name(file: &str) -> bool {
    !file.is_empty()
        && file.len() <= MAX_FILE_LEN
        && !file.chars().any(|c| c == '\\' || c.is_control())
        && !file.split('/').any(|part| part == "." || part == "..")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn package(name: &str) -> PackageName {
        PackageName::parse(name).unwrap()
    }

    #[test]
    fn routes_are_recognised() {
        assert_eq!(classify("/packages.json").unwrap(), Route::PackagesJson);
        assert_eq!(
            classify("/p2/acme/tool.json").unwrap(),
            Route::P2 {
                package: package("acme/tool"),
                dev: false
            }
        );
        assert_eq!(
            classify("/p2/acme/tool~dev.json").unwrap(),
            Route::P2 {
                package: package("acme/tool"),
                dev: true
            }
        );
        assert_eq!(
            classify("/dists/acme/tool/feature%2Fx.zip").unwrap(),
            Route::Dist {
                package: package("acme/tool"),
                file: "feature/x.zip".to_owned()
            }
        );
        assert_eq!(
            classify("/dists/acme/tool/release%2F1.x%2Fnext.zip").unwrap(),
            Route::Dist {
                package: package("acme/tool"),
                file: "release/1.x/next.zip".to_owned()
            }
        );
        assert_eq!(
            classify("/providers/psr/log-implementation.json").unwrap(),
            Route::Endpoint {
                endpoint: Endpoint::ProvidersApi,
                package: Some(package("psr/log-implementation"))
            }
        );
        assert_eq!(
            classify("/link/3").unwrap(),
            Route::Endpoint {
                endpoint: Endpoint::Other(3),
                package: None
            }
        );
    }

    #[test]
    fn every_endpoint_names_a_link_the_root_rewrite_keeps() {
        let kept: Vec<&str> = crate::rewrite::ENDPOINTS.iter().map(|(k, _)| *k).collect();
        for endpoint in [
            Endpoint::NotifyBatch,
            Endpoint::Search,
            Endpoint::List,
            Endpoint::ProvidersApi,
            Endpoint::SecurityAdvisories,
            Endpoint::MetadataChanges,
        ] {
            assert!(kept.contains(&endpoint.link().as_str()), "{endpoint:?}");
        }
        assert_eq!(Endpoint::Other(7).link(), "link/7");
    }

    #[test]
    fn other_paths_are_not_found() {
        for path in [
            "",
            "/",
            "/p2/acme.json",
            "/p2/../etc/passwd.json",
            "/p2/Acme/Tool.json",
            "/dists/acme/tool",
            "/dists/acme/tool/",
            "/dists/../x/y.zip",
            "/dists/acme/tool/%00.zip",
            "/dists/acme/tool/..%2F..%2Fsecret.zip",
            "/dists/acme/tool/feature%2F..%2F..%2Fx.zip",
            "/dists/acme/tool/..",
            "/dists/acme/tool/a%5Cb.zip",
            "/dists/acme/tool/a%0Ab.zip",
            "/link/",
            "/link/x",
            "/p/acme/tool$abc.json",
        ] {
            let error = classify(path).unwrap_err();
            assert_eq!(error.status(), http::StatusCode::NOT_FOUND, "{path}");
        }
    }
}
