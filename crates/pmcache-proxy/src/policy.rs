//! The fleet's policy applied in the core: a request for an artifact of a refused release gets
//! 403 with the rule's reason, stored copy or not, and a rendering is made again when the rules
//! it was filtered by change or a version it hid comes of age.

use std::sync::{Arc, PoisonError};
use std::time::SystemTime;

use pmcache_policy::{Ecosystem, Policy, Refusal, Verdict};
use pmcache_store::Digest;

use crate::Proxy;
use crate::artifact::ArtifactSource;
use crate::document::record::DocumentRecord;
use crate::error::{Error, Result};

/// The policy in force, and what each ecosystem's renderings are made under.
pub(crate) struct InForce {
    policy: Arc<Policy>,
    /// By [`Ecosystem::ALL`] order: pmcache's renderer and a digest of the ecosystem's rules.
    renderers: Vec<String>,
}

impl InForce {
    fn new(policy: Policy) -> InForce {
        let renderers = Ecosystem::ALL
            .iter()
            .map(|ecosystem| {
                let rules = Digest::of(policy.describe(*ecosystem).as_bytes()).to_string();
                format!("{}+policy:{}", crate::document::RENDERER, &rules[..16])
            })
            .collect();
        InForce {
            policy: Arc::new(policy),
            renderers,
        }
    }
}

impl Default for InForce {
    fn default() -> InForce {
        InForce::new(Policy::default())
    }
}

impl Proxy {
    /// Puts `policy` in force for every request from now on.
    pub fn set_policy(&self, policy: Policy) {
        let mut current = self
            .inner
            .policy
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        *current = Arc::new(InForce::new(policy));
    }

    fn in_force(&self) -> Arc<InForce> {
        let current = self
            .inner
            .policy
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        Arc::clone(&current)
    }

    /// The policy in force.
    pub fn policy(&self) -> Arc<Policy> {
        Arc::clone(&self.in_force().policy)
    }

    /// Counts and logs a refusal the policy made for an `ecosystem` request, and gives the
    /// error its client gets (403 with the reason).
    pub fn policy_refused(&self, ecosystem: Ecosystem, refusal: Refusal) -> Error {
        tracing::info!(
            ecosystem = ecosystem.as_str(),
            rule = refusal.rule.as_str(),
            subject = %refusal.subject,
            "refused by policy"
        );
        self.inner
            .metrics
            .policy_refused(ecosystem.as_str(), refusal.rule.as_str());
        Error::Policy {
            refusal: Box::new(refusal),
        }
    }

    /// Refuses `ecosystem`'s package `name` when the policy serves none of it (`deny` of every
    /// version, or outside `allow_only`): before any of its documents is fetched.
    pub fn check_package(&self, ecosystem: Ecosystem, name: &str) -> Result<()> {
        match self.policy().judge_name(ecosystem, name) {
            Verdict::Allowed => Ok(()),
            Verdict::Refused(refusal) => Err(self.policy_refused(ecosystem, refusal)),
        }
    }

    /// Refuses an artifact of a release the policy does not serve now, or whose package is
    /// routed to no upstream. Records an older pmcache wrote (no package) and ecosystems the
    /// policy does not know pass. The same bytes named by another version are refused when
    /// `deny` or `allow_only` refuses that version.
    pub(crate) fn check_release(&self, ecosystem: &str, source: &ArtifactSource) -> Result<()> {
        let Some(release) = source
            .release()
            .filter(|release| !release.package.is_empty())
        else {
            return Ok(());
        };
        let Ok(ecosystem) = ecosystem.parse::<Ecosystem>() else {
            return Ok(());
        };
        self.check_route(ecosystem, &release.package)?;
        let policy = self.policy();
        let package = release.package.as_str();
        let verdict = match &release.version {
            // Its document, read again at the next metadata request, will date it; until
            // then the lists alone can judge it.
            Some(version) if source.is_undated() => policy.judge_lists(ecosystem, package, version),
            Some(version) => policy.judge(
                ecosystem,
                package,
                version,
                release.published,
                SystemTime::now(),
            ),
            None => policy.judge_name(ecosystem, package),
        };
        let verdict = source
            .other_versions()
            .iter()
            .map(|other| policy.judge_lists(ecosystem, package, other))
            .fold(verdict, |first, next| match first {
                Verdict::Allowed => next,
                refused => refused,
            });
        match verdict {
            Verdict::Allowed => Ok(()),
            Verdict::Refused(refusal) => Err(self.policy_refused(ecosystem, refusal)),
        }
    }

    /// Whether `source`'s record predates publish times while the age rule applies to its
    /// package: its documents are read again before it is judged.
    pub(crate) fn needs_dating(&self, ecosystem: &str, source: &ArtifactSource) -> bool {
        let (Some(release), Ok(ecosystem)) = (source.release(), ecosystem.parse::<Ecosystem>())
        else {
            return false;
        };
        source.is_undated()
            && self
                .policy()
                .needs_publish_times(ecosystem, &release.package)
    }

    /// Whether `record` was rendered under the rules in force now and everything it hid is
    /// still young: else it is made again from a fresh upstream copy.
    pub(crate) fn policy_current(&self, ecosystem: &str, record: &DocumentRecord) -> bool {
        let renderer = record
            .rendered_from
            .as_ref()
            .map(|(_, renderer)| renderer.as_str());
        renderer == Some(self.renderer(ecosystem).as_str())
            && record
                .hidden_until
                .is_none_or(|until| SystemTime::now() < until)
    }

    /// Names the renderer and the rules a rendering of `ecosystem` is made under.
    pub(crate) fn renderer(&self, ecosystem: &str) -> String {
        let in_force = self.in_force();
        Ecosystem::ALL
            .iter()
            .position(|known| known.as_str() == ecosystem)
            .and_then(|index| in_force.renderers.get(index).cloned())
            .unwrap_or_else(|| crate::document::RENDERER.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use url::Url;

    use super::*;
    use crate::artifact::Release;
    use crate::config::Config;

    fn proxy(dir: &std::path::Path, config: &pmcache_policy::Config) -> Proxy {
        let store = pmcache_store::Store::open(dir).expect("store");
        let proxy = Proxy::new(store, &Config::default()).expect("proxy");
        proxy.set_policy(Policy::new(config, &[], &[]).expect("policy"));
        proxy
    }

    fn source(version: &str, published: Option<SystemTime>) -> ArtifactSource {
        let release = Release {
            package: "acme/tool".to_owned(),
            version: Some(version.to_owned()),
            published,
        };
        let url = Url::parse("https://code.example/acme/tool/abc.zip").expect("url");
        ArtifactSource::advertised(url, None, Some(release))
    }

    fn refused_by(result: Result<()>) -> Option<&'static str> {
        match result {
            Err(Error::Policy { refusal }) => Some(refusal.rule.as_str()),
            _ => None,
        }
    }

    #[test]
    fn bytes_a_denied_version_also_names_are_refused_under_any_name() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = pmcache_policy::Config {
            deny: vec!["packagist:acme/tool@2.0.0".to_owned()],
            ..pmcache_policy::Config::default()
        };
        let proxy = proxy(dir.path(), &config);
        let branch = source("dev-main", None);
        assert_eq!(refused_by(proxy.check_release("packagist", &branch)), None);
        let shared = branch.recorded(vec!["2.0.0".to_owned()], false);
        assert_eq!(
            refused_by(proxy.check_release("packagist", &shared)),
            Some("deny")
        );
    }

    #[test]
    fn a_record_from_before_publish_times_is_judged_by_the_lists_until_dated() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = pmcache_policy::Config {
            min_release_age: Duration::from_secs(86_400),
            ..pmcache_policy::Config::default()
        };
        let proxy = proxy(dir.path(), &config);
        let legacy = source("1.0.0", None).recorded(Vec::new(), true);
        assert!(proxy.needs_dating("packagist", &legacy));
        assert_eq!(refused_by(proxy.check_release("packagist", &legacy)), None);

        let undated = source("1.0.0", None);
        assert!(!proxy.needs_dating("packagist", &undated));
        assert_eq!(
            refused_by(proxy.check_release("packagist", &undated)),
            Some("unknown_release_time")
        );
        let young = source("1.0.0", Some(SystemTime::now()));
        assert_eq!(
            refused_by(proxy.check_release("packagist", &young)),
            Some("min_release_age")
        );
    }
}
