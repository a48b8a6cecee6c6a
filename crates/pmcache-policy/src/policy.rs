//! The compiled policy: each ecosystem's rules (`[policy]` overridden key by key by its own
//! section) and the routes, and the judgements the frontends ask of them.

use std::time::{Duration, SystemTime};

use crate::config::{Config, Override, RouteConfig, UnknownReleaseTime};
use crate::route::Route;
use crate::verdict::{ago, compact};
use crate::{Ecosystem, Error, Pattern, Refusal, Result, Rule, Verdict};

/// One ecosystem's rules, with only the patterns that name it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Rules {
    min_release_age: Duration,
    min_release_age_exclude: Vec<Pattern>,
    unknown_release_time: UnknownReleaseTime,
    deny: Vec<Pattern>,
    /// None: the rule is off. Some: only these are served, and an empty list (a `[policy]`
    /// list naming only other ecosystems) serves nothing.
    allow_only: Option<Vec<Pattern>>,
}

/// The fleet's policy, checked: what [`judge`](Policy::judge) and [`route`](Policy::route)
/// answer. The default refuses nothing and routes nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// By [`Ecosystem::ALL`] order.
    rules: [Rules; 4],
    routes: Vec<Route>,
}

/// Which patterns a list setting takes.
#[derive(Clone, Copy)]
enum Takes {
    /// `ecosystem:name[@version]`.
    Versions,
    /// `ecosystem:name` only.
    Names,
}

impl Policy {
    /// Checks and compiles the settings: `global` is `[policy]`, `sections` the per-ecosystem
    /// `[<ecosystem>.policy]` sections (an ecosystem left out has no overrides), `routes` the
    /// `[[routes]]` entries in order. The first bad setting is the error, naming it.
    pub fn new(
        global: &Config,
        sections: &[(Ecosystem, &Override)],
        routes: &[RouteConfig],
    ) -> Result<Policy> {
        let exclude = patterns(
            "policy.min_release_age_exclude",
            &global.min_release_age_exclude,
            None,
            Takes::Names,
        )?;
        let deny = patterns("policy.deny", &global.deny, None, Takes::Versions)?;
        let allow_only = patterns(
            "policy.allow_only",
            &global.allow_only,
            None,
            Takes::Versions,
        )?;
        let mut rules: [Rules; 4] = Default::default();
        for (slot, ecosystem) in rules.iter_mut().zip(Ecosystem::ALL) {
            let own = |all: &[Pattern]| -> Vec<Pattern> {
                all.iter()
                    .filter(|pattern| pattern.ecosystem() == ecosystem)
                    .cloned()
                    .collect()
            };
            *slot = Rules {
                min_release_age: global.min_release_age,
                min_release_age_exclude: own(&exclude),
                unknown_release_time: global.unknown_release_time,
                deny: own(&deny),
                allow_only: (!allow_only.is_empty()).then(|| own(&allow_only)),
            };
            if let Some((_, section)) = sections.iter().find(|(named, _)| *named == ecosystem) {
                slot.apply(ecosystem, section)?;
            }
        }
        let routes = routes
            .iter()
            .enumerate()
            .map(|(index, route)| Route::new(index, route))
            .collect::<Result<Vec<_>>>()?;
        Ok(Policy { rules, routes })
    }

    fn rules(&self, ecosystem: Ecosystem) -> &Rules {
        let index = Ecosystem::ALL
            .iter()
            .position(|known| *known == ecosystem)
            .expect("ALL holds every ecosystem");
        &self.rules[index]
    }

    /// Whether `version` of the package `name` is served, given when it was published (None:
    /// unknown) and the time now. The rules in order, the first that refuses deciding:
    /// `deny`, `allow_only`, then, while `min_release_age` is on and the name is not in
    /// `min_release_age_exclude`, the age rule and `unknown_release_time`.
    pub fn judge(
        &self,
        ecosystem: Ecosystem,
        name: &str,
        version: &str,
        published: Option<SystemTime>,
        now: SystemTime,
    ) -> Verdict {
        if let refused @ Verdict::Refused(_) = self.judge_lists(ecosystem, name, version) {
            return refused;
        }
        let rules = self.rules(ecosystem);
        let name = ecosystem.normalize_name(name);
        let subject = format!("{ecosystem}:{name}@{version}");
        if !rules.ages(&name) {
            return Verdict::Allowed;
        }
        let min_age = rules.min_release_age;
        let Some(published) = published else {
            return match rules.unknown_release_time {
                UnknownReleaseTime::Allow => Verdict::Allowed,
                UnknownReleaseTime::Deny => Verdict::Refused(Refusal::new(
                    Rule::UnknownReleaseTime,
                    subject,
                    "has no known publish time; unknown_release_time is deny".to_owned(),
                )),
            };
        };
        let matures_at = published.checked_add(min_age);
        if matures_at.is_some_and(|matures_at| matures_at <= now) {
            return Verdict::Allowed;
        }
        // A publish time ahead of the clock (skew) reads as "just now": still too young.
        let age = now.duration_since(published).unwrap_or(Duration::ZERO);
        let mut refusal = Refusal::new(
            Rule::MinReleaseAge,
            subject,
            format!(
                "was published {}; min_release_age is {}",
                ago(age),
                compact(min_age)
            ),
        );
        refusal.matures_at = matures_at;
        Verdict::Refused(refusal)
    }

    /// `deny` and `allow_only` alone: for a version whose publish time is not at hand (a record
    /// an older pmcache wrote, another version naming the same bytes), which the age rule
    /// cannot judge.
    pub fn judge_lists(&self, ecosystem: Ecosystem, name: &str, version: &str) -> Verdict {
        let rules = self.rules(ecosystem);
        let name = ecosystem.normalize_name(name);
        let normal_version = ecosystem.normalize_version(version);
        let subject = format!("{ecosystem}:{name}@{version}");
        let matching = |pattern: &&Pattern| pattern.matches_normal(&name, Some(&normal_version));
        if let Some(pattern) = rules.deny.iter().find(matching) {
            return denied(subject, pattern);
        }
        if let Some(allowed) = &rules.allow_only
            && !allowed.iter().any(|p| matching(&p))
        {
            return not_allowed(subject);
        }
        Verdict::Allowed
    }

    /// Whether the package `name` is served at all: refused when a `deny` pattern names every
    /// version of it, or `allow_only` is set and no pattern of it names the package (a version
    /// of an allowed one may still be refused by [`judge`](Policy::judge)).
    pub fn judge_name(&self, ecosystem: Ecosystem, name: &str) -> Verdict {
        let rules = self.rules(ecosystem);
        let name = ecosystem.normalize_name(name);
        let subject = format!("{ecosystem}:{name}");
        let whole = rules
            .deny
            .iter()
            .filter(|pattern| pattern.is_whole_package())
            .find(|pattern| pattern.matches_normal(&name, None));
        if let Some(pattern) = whole {
            return denied(subject, pattern);
        }
        let listed = |pattern: &Pattern| pattern.matches_normal(&name, None);
        if let Some(allowed) = &rules.allow_only
            && !allowed.iter().any(listed)
        {
            return not_allowed(subject);
        }
        Verdict::Allowed
    }

    /// Whether the age rule applies to the package `name`, so that its versions' publish times
    /// are needed (RubyGems' compact index carries none: they cost a request of their own).
    pub fn needs_publish_times(&self, ecosystem: Ecosystem, name: &str) -> bool {
        self.rules(ecosystem).ages(&ecosystem.normalize_name(name))
    }

    /// What the ecosystem does with a version whose publish time is unknown, while the age
    /// rule is on.
    pub fn unknown_release_time(&self, ecosystem: Ecosystem) -> UnknownReleaseTime {
        self.rules(ecosystem).unknown_release_time
    }

    /// The ecosystem's `min_release_age`; zero when the rule is off.
    pub fn min_release_age(&self, ecosystem: Ecosystem) -> Duration {
        self.rules(ecosystem).min_release_age
    }

    /// The first `[[routes]]` entry, in the order written, that takes the package `name`; None:
    /// the ecosystem's own upstream.
    pub fn route(&self, ecosystem: Ecosystem, name: &str) -> Option<&Route> {
        self.routes
            .iter()
            .find(|route| route.takes(ecosystem, name))
    }

    /// Every route, in the order written.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The ecosystem's rules, written out: equal for equal rules, so that a rendering can say
    /// which rules it was filtered by, and be rendered again when they change.
    pub fn describe(&self, ecosystem: Ecosystem) -> String {
        format!("{:?}", self.rules(ecosystem))
    }
}

impl Rules {
    /// Replaces the keys `section` (`[<ecosystem>.policy]`) sets.
    fn apply(&mut self, ecosystem: Ecosystem, section: &Override) -> Result<()> {
        let key = |name: &str| format!("{ecosystem}.policy.{name}");
        let own = |name: &str, list: &Option<Vec<String>>, takes: Takes| {
            list.as_ref()
                .map(|list| patterns(&key(name), list, Some(ecosystem), takes))
                .transpose()
        };
        if let Some(age) = section.min_release_age {
            self.min_release_age = age;
        }
        if let Some(unknown) = section.unknown_release_time {
            self.unknown_release_time = unknown;
        }
        if let Some(list) = own(
            "min_release_age_exclude",
            &section.min_release_age_exclude,
            Takes::Names,
        )? {
            self.min_release_age_exclude = list;
        }
        if let Some(list) = own("deny", &section.deny, Takes::Versions)? {
            self.deny = list;
        }
        if let Some(list) = own("allow_only", &section.allow_only, Takes::Versions)? {
            self.allow_only = (!list.is_empty()).then_some(list);
        }
        Ok(())
    }

    /// Whether the age rule applies to the normalised `name`.
    fn ages(&self, name: &str) -> bool {
        !self.min_release_age.is_zero()
            && !self
                .min_release_age_exclude
                .iter()
                .any(|pattern| pattern.matches_normal(name, None))
    }
}

/// The patterns of the list setting `key`.
fn patterns(
    key: &str,
    list: &[String],
    section: Option<Ecosystem>,
    takes: Takes,
) -> Result<Vec<Pattern>> {
    list.iter()
        .map(|text| match takes {
            Takes::Versions => Pattern::parse(text, section),
            Takes::Names => Pattern::parse_name(text, section),
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| Error::Pattern {
            key: key.to_owned(),
            error,
        })
}

fn denied(subject: String, pattern: &Pattern) -> Verdict {
    Verdict::Refused(Refusal::new(
        Rule::Deny,
        subject,
        format!("is denied (deny = {:?})", pattern.to_string()),
    ))
}

fn not_allowed(subject: String) -> Verdict {
    Verdict::Refused(Refusal::new(
        Rule::AllowOnly,
        subject,
        "is not in allow_only".to_owned(),
    ))
}

#[cfg(test)]
mod tests;
