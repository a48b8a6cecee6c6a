//! The fleet's policy applied in the core: a request for an artifact of a refused release gets
//! 403 with the rule's reason, stored copy or not, and a rendering is made again when the rules
//! it was filtered by change or a version it hid comes of age.

use std::sync::{Arc, PoisonError};
use std::time::SystemTime;

use pmcache_policy::{Ecosystem, Policy, Refusal, Verdict};
use pmcache_store::Digest;

use crate::Proxy;
use crate::artifact::Release;
use crate::document::record::DocumentRecord;
use crate::error::{Error, Result};

/// The ecosystems whose frontends read publish times (PyPI from PEP 700 JSON pages, RubyGems
/// from its versions API): the age rule applies to them alone (see
/// [`Proxy::undated_age_rules`]).
pub(crate) const DATED: [Ecosystem; 4] = [
    Ecosystem::Pypi,
    Ecosystem::Npm,
    Ecosystem::Packagist,
    Ecosystem::Rubygems,
];

/// Whether pmcache reads the publish times of `ecosystem`'s versions, so that its age rule is
/// applied (`pmcache policy check` says so when it is not).
pub fn reads_publish_times(ecosystem: Ecosystem) -> bool {
    DATED.contains(&ecosystem)
}

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

    /// The ecosystems with a `min_release_age` set whose publish times pmcache does not read
    /// yet: the age rule is not applied to them, and the operator should be told.
    pub fn undated_age_rules(&self) -> Vec<Ecosystem> {
        let policy = self.policy();
        Ecosystem::ALL
            .into_iter()
            .filter(|ecosystem| !DATED.contains(ecosystem))
            .filter(|ecosystem| !policy.min_release_age(*ecosystem).is_zero())
            .collect()
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

    /// Refuses an artifact of `release` the policy does not serve now, or whose package is
    /// routed to no upstream. Records an older pmcache wrote (no package) and ecosystems the
    /// policy does not know pass.
    pub(crate) fn check_release(&self, ecosystem: &str, release: Option<&Release>) -> Result<()> {
        let Some(release) = release.filter(|release| !release.package.is_empty()) else {
            return Ok(());
        };
        let Ok(ecosystem) = ecosystem.parse::<Ecosystem>() else {
            return Ok(());
        };
        self.check_route(ecosystem, &release.package)?;
        let policy = self.policy();
        let verdict = match &release.version {
            Some(version) if DATED.contains(&ecosystem) => policy.judge(
                ecosystem,
                &release.package,
                version,
                release.published,
                SystemTime::now(),
            ),
            Some(version) => policy.judge_lists(ecosystem, &release.package, version),
            None => policy.judge_name(ecosystem, &release.package),
        };
        match verdict {
            Verdict::Allowed => Ok(()),
            Verdict::Refused(refusal) => Err(self.policy_refused(ecosystem, refusal)),
        }
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
