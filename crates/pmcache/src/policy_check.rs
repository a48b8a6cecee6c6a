//! `pmcache policy check`: what the configured policy does with one package (and version), and
//! why, in lines an operator can read without starting the server.

use std::time::{Duration, SystemTime};

use pmcache_policy::{Ecosystem, Policy, UnknownReleaseTime, Upstream, Verdict, compact};

/// The answer for one package: lines to print, and whether it would be served.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Report {
    /// One finding per line, the first naming the package as the rules see it.
    pub lines: Vec<String>,
    /// False when a client would get a refusal: the package or the version is refused, or a
    /// route sends the name nowhere.
    pub served: bool,
}

/// What a question asks: the package, a version of it, and when that version was published
/// if the operator knows (the age rule needs it; the upstream is not asked).
pub(crate) struct Question<'a> {
    pub ecosystem: Ecosystem,
    pub name: &'a str,
    pub version: Option<&'a str>,
    pub published: Option<SystemTime>,
}

/// Judges `question` by `policy` at `now`.
pub(crate) fn check(policy: &Policy, question: &Question, now: SystemTime) -> Report {
    let ecosystem = question.ecosystem;
    let name = ecosystem.normalize_name(question.name);
    let mut report = Report {
        lines: vec![format!("{ecosystem}:{name}")],
        served: true,
    };
    report.route(policy, ecosystem, &name);
    match policy.judge_name(ecosystem, &name) {
        Verdict::Refused(refusal) => report.refuse(format!("package: refused: {refusal}")),
        Verdict::Allowed => report.note("package: served (deny and allow_only let it through)"),
    }
    if report.served {
        report.age_rule(policy, ecosystem, &name);
        if let Some(version) = question.version {
            report.version(policy, question, &name, version, now);
        }
    }
    report
}

impl Report {
    fn note(&mut self, line: impl Into<String>) {
        self.lines.push(format!("  {}", line.into()));
    }

    fn refuse(&mut self, line: String) {
        self.note(line);
        self.served = false;
    }

    fn route(&mut self, policy: &Policy, ecosystem: Ecosystem, name: &str) {
        match policy
            .route(ecosystem, name)
            .map(|route| (route.index(), route.upstream()))
        {
            None => self.note(format!("upstream: the {ecosystem} upstream")),
            Some((index, Upstream::Url(url))) => self.note(format!(
                "upstream: {url} (routes[{index}]); never the public {ecosystem} upstream"
            )),
            Some((index, Upstream::None)) => self.refuse(format!(
                "upstream: none (routes[{index}]): pmcache answers 404 and asks no upstream"
            )),
        }
    }

    fn age_rule(&mut self, policy: &Policy, ecosystem: Ecosystem, name: &str) {
        let min_age = policy.min_release_age(ecosystem);
        if min_age.is_zero() {
            self.note("min_release_age: off");
        } else if !policy.needs_publish_times(ecosystem, name) {
            self.note(format!(
                "min_release_age: {}, but the name is in min_release_age_exclude",
                compact(min_age)
            ));
        } else {
            let unknown = match policy.unknown_release_time(ecosystem) {
                UnknownReleaseTime::Deny => "hidden",
                UnknownReleaseTime::Allow => "shown",
            };
            self.note(format!(
                "min_release_age: {}: a version is hidden until it is that old; one without a \
                 publish time is {unknown} (unknown_release_time = {})",
                compact(min_age),
                policy.unknown_release_time(ecosystem).as_str()
            ));
        }
    }

    fn version(
        &mut self,
        policy: &Policy,
        question: &Question,
        name: &str,
        version: &str,
        now: SystemTime,
    ) {
        let ecosystem = question.ecosystem;
        let ages = policy.needs_publish_times(ecosystem, name);
        let verdict = match (ages, question.published) {
            (true, Some(published)) => policy.judge(ecosystem, name, version, Some(published), now),
            _ => policy.judge_lists(ecosystem, name, version),
        };
        match verdict {
            Verdict::Refused(refusal) => {
                let until = refusal
                    .matures_at
                    .map(|at| format!(" (shown from {})", humantime::format_rfc3339_seconds(at)))
                    .unwrap_or_default();
                self.refuse(format!("version {version}: refused: {refusal}{until}"));
            }
            Verdict::Allowed if ages && question.published.is_none() => self.note(format!(
                "version {version}: deny and allow_only let it through; its age decides \
                 (give --published TIME to judge it)"
            )),
            Verdict::Allowed => self.note(format!("version {version}: served")),
        }
    }
}

/// Parses `--published`: an RFC 3339 time as registries write them (`2026-12-01T10:00:00Z`,
/// any offset), or an age (`2h`, `3d`) meaning that long before now.
pub(crate) fn parse_published(text: &str, now: SystemTime) -> Result<SystemTime, String> {
    if let Some(time) = pmcache_policy::parse_time(text) {
        return Ok(time);
    }
    let age: Duration = humantime::parse_duration(text).map_err(|_| {
        format!("{text:?} is neither a time (2026-12-01T10:00:00Z) nor an age (2h, 3d)")
    })?;
    now.checked_sub(age)
        .ok_or_else(|| format!("{text:?} reaches before the epoch"))
}

#[cfg(test)]
mod tests {
    use pmcache_policy::{Config, Override, RouteConfig};

    use super::*;

    fn policy(global: Config, npm: Override, routes: &[RouteConfig]) -> Policy {
        let empty = Override::default();
        Policy::new(
            &global,
            &[
                (Ecosystem::Pypi, &empty),
                (Ecosystem::Npm, &npm),
                (Ecosystem::Rubygems, &empty),
                (Ecosystem::Packagist, &empty),
            ],
            routes,
        )
        .unwrap()
    }

    fn ask<'a>(
        name: &'a str,
        version: Option<&'a str>,
        published: Option<SystemTime>,
    ) -> Question<'a> {
        Question {
            ecosystem: Ecosystem::Npm,
            name,
            version,
            published,
        }
    }

    fn fleet() -> Policy {
        let global = Config {
            min_release_age: Duration::from_secs(7 * 86_400),
            min_release_age_exclude: vec!["npm:@acme/*".to_owned()],
            deny: vec!["npm:event-stream@3.3.6".to_owned(), "pypi:ctx".to_owned()],
            ..Config::default()
        };
        let routes = [RouteConfig {
            ecosystem: "npm".to_owned(),
            names: vec!["@acme/*".to_owned()],
            upstream: "https://npm.internal.example/".to_owned(),
        }];
        policy(global, Override::default(), &routes)
    }

    #[test]
    fn a_young_version_is_refused_with_the_rule_and_when_it_shows() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let published = now - Duration::from_secs(2 * 3600);
        let report = check(
            &fleet(),
            &ask("left-pad", Some("1.3.0"), Some(published)),
            now,
        );
        assert!(!report.served);
        let text = report.lines.join("\n");
        assert!(
            text.starts_with("npm:left-pad\n  upstream: the npm upstream"),
            "{text}"
        );
        assert!(
            text.contains("was published 2 hours ago; min_release_age is 7d"),
            "{text}"
        );
        assert!(text.contains("(shown from 2027-01-22T06:00:00Z)"), "{text}");
    }

    #[test]
    fn an_exempt_routed_scope_names_its_route_and_skips_the_age_rule() {
        let now = SystemTime::now();
        let report = check(&fleet(), &ask("@acme/tool", Some("1.0.0"), Some(now)), now);
        assert!(report.served, "{report:?}");
        let text = report.lines.join("\n");
        assert!(
            text.contains("https://npm.internal.example/ (routes[0])"),
            "{text}"
        );
        assert!(text.contains("in min_release_age_exclude"), "{text}");
        assert!(text.contains("version 1.0.0: served"), "{text}");
    }

    #[test]
    fn deny_of_a_version_and_a_route_to_nowhere_refuse() {
        let now = SystemTime::now();
        let report = check(&fleet(), &ask("event-stream", Some("3.3.6"), None), now);
        assert!(!report.served);
        assert!(
            report
                .lines
                .join("\n")
                .contains("npm:event-stream@3.3.6 is denied")
        );

        let routes = [RouteConfig {
            ecosystem: "npm".to_owned(),
            names: vec!["@secret/*".to_owned()],
            upstream: "none".to_owned(),
        }];
        let nowhere = policy(Config::default(), Override::default(), &routes);
        let report = check(&nowhere, &ask("@secret/x", None, None), now);
        assert!(!report.served);
        assert!(
            report
                .lines
                .join("\n")
                .contains("upstream: none (routes[0])")
        );
    }

    #[test]
    fn without_a_publish_time_the_age_rule_is_explained_not_guessed() {
        let now = SystemTime::now();
        let report = check(&fleet(), &ask("left-pad", Some("1.3.0"), None), now);
        assert!(report.served);
        assert!(report.lines.join("\n").contains("give --published TIME"));
    }

    #[test]
    fn published_takes_a_utc_time_or_an_age() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(
            parse_published("1h", now),
            Ok(now - Duration::from_secs(3600))
        );
        assert_eq!(
            parse_published("1970-01-01T00:01:00Z", now),
            Ok(SystemTime::UNIX_EPOCH + Duration::from_secs(60))
        );
        assert_eq!(
            parse_published("1970-01-01T02:01:00+02:00", now),
            Ok(SystemTime::UNIX_EPOCH + Duration::from_secs(60))
        );
        assert!(parse_published("yesterday", now).is_err());
    }
}
