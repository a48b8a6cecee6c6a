//! Each rule alone, their precedence, per-ecosystem overrides and bad settings.

use std::time::{Duration, SystemTime};

use super::*;
use crate::Upstream;

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|text| (*text).to_owned()).collect()
}

fn policy(global: Config) -> Policy {
    Policy::new(&global, &[], &[]).unwrap()
}

fn reason(verdict: &Verdict) -> String {
    verdict.refusal().expect("refused").to_string()
}

fn rule(verdict: &Verdict) -> Option<Rule> {
    verdict.refusal().map(|refusal| refusal.rule)
}

#[test]
fn the_default_policy_serves_everything_and_routes_nothing() {
    let policy = Policy::new(&Config::default(), &[], &[]).unwrap();
    assert_eq!(policy, Policy::default());
    for ecosystem in Ecosystem::ALL {
        assert!(
            policy
                .judge(ecosystem, "x", "1.0", None, now())
                .is_allowed()
        );
        assert!(policy.judge_name(ecosystem, "x").is_allowed());
        assert!(!policy.needs_publish_times(ecosystem, "x"));
        assert_eq!(policy.min_release_age(ecosystem), Duration::ZERO);
        assert!(policy.route(ecosystem, "x").is_none());
    }
}

#[test]
fn young_versions_are_refused_until_they_mature() {
    let policy = policy(Config {
        min_release_age: 3 * DAY,
        ..Config::default()
    });
    let published = now() - 2 * HOUR;
    let verdict = policy.judge(Ecosystem::Npm, "foo", "1.2.3", Some(published), now());
    assert_eq!(
        reason(&verdict),
        "pmcache policy: npm:foo@1.2.3 was published 2 hours ago; min_release_age is 3d"
    );
    let refusal = verdict.refusal().unwrap();
    assert_eq!(refusal.rule, Rule::MinReleaseAge);
    assert_eq!(refusal.subject, "npm:foo@1.2.3");
    assert_eq!(refusal.matures_at, Some(published + 3 * DAY));
    // Exactly at maturity, and after it, the version is served.
    assert!(
        policy
            .judge(
                Ecosystem::Npm,
                "foo",
                "1.2.3",
                Some(published),
                published + 3 * DAY
            )
            .is_allowed()
    );
    assert!(
        policy
            .judge(Ecosystem::Pypi, "foo", "1.0", Some(now() - 4 * DAY), now())
            .is_allowed()
    );
    assert!(policy.needs_publish_times(Ecosystem::Rubygems, "rails"));
    assert_eq!(policy.min_release_age(Ecosystem::Packagist), 3 * DAY);
}

#[test]
fn a_publish_time_ahead_of_the_clock_is_young() {
    let policy = policy(Config {
        min_release_age: HOUR,
        ..Config::default()
    });
    let published = now() + Duration::from_secs(30);
    let verdict = policy.judge(Ecosystem::Pypi, "Foo_Bar", "1.0", Some(published), now());
    assert_eq!(
        reason(&verdict),
        "pmcache policy: pypi:foo-bar@1.0 was published just now; min_release_age is 1h"
    );
    assert_eq!(
        verdict.refusal().unwrap().matures_at,
        Some(published + HOUR)
    );
}

#[test]
fn unknown_publish_times_follow_unknown_release_time_while_the_age_rule_is_on() {
    let deny = policy(Config {
        min_release_age: DAY,
        ..Config::default()
    });
    let verdict = deny.judge(Ecosystem::Rubygems, "rails", "7.1.0", None, now());
    assert_eq!(
        reason(&verdict),
        "pmcache policy: rubygems:rails@7.1.0 has no known publish time; unknown_release_time is deny"
    );
    assert_eq!(verdict.refusal().unwrap().matures_at, None);
    let allow = policy(Config {
        min_release_age: DAY,
        unknown_release_time: UnknownReleaseTime::Allow,
        ..Config::default()
    });
    assert!(
        allow
            .judge(Ecosystem::Rubygems, "rails", "7.1.0", None, now())
            .is_allowed()
    );
    // With the age rule off, publish times do not matter at all.
    assert!(
        policy(Config::default())
            .judge(Ecosystem::Rubygems, "rails", "7.1.0", None, now())
            .is_allowed()
    );
}

#[test]
fn exempt_names_skip_the_age_rule_and_the_unknown_time_rule() {
    let policy = policy(Config {
        min_release_age: 7 * DAY,
        min_release_age_exclude: strings(&["npm:@acme/*", "pypi:acme-*"]),
        ..Config::default()
    });
    assert!(
        policy
            .judge(Ecosystem::Npm, "@acme/tool", "1.0.0", Some(now()), now())
            .is_allowed()
    );
    assert!(
        policy
            .judge(Ecosystem::Npm, "@acme/tool", "1.0.0", None, now())
            .is_allowed()
    );
    assert!(
        policy
            .judge(Ecosystem::Pypi, "Acme_Lib", "1.0", Some(now()), now())
            .is_allowed()
    );
    assert!(!policy.needs_publish_times(Ecosystem::Pypi, "acme.lib"));
    assert_eq!(
        rule(&policy.judge(Ecosystem::Npm, "@other/tool", "1.0.0", Some(now()), now())),
        Some(Rule::MinReleaseAge)
    );
    // An exemption names its ecosystem only.
    assert_eq!(
        rule(&policy.judge(Ecosystem::Pypi, "@acme/tool", "1.0.0", Some(now()), now())),
        Some(Rule::MinReleaseAge)
    );
}

#[test]
fn deny_refuses_one_version_or_every_version() {
    let policy = policy(Config {
        deny: strings(&[
            "npm:event-stream@3.3.6",
            "pypi:ctx",
            "rubygems:rest-client@1.6.13",
            "packagist:acme/tool@*",
        ]),
        ..Config::default()
    });
    let judge = |ecosystem, name, version| policy.judge(ecosystem, name, version, None, now());
    assert_eq!(
        reason(&judge(Ecosystem::Npm, "event-stream", "3.3.6")),
        "pmcache policy: npm:event-stream@3.3.6 is denied (deny = \"npm:event-stream@3.3.6\")"
    );
    assert!(judge(Ecosystem::Npm, "event-stream", "3.3.5").is_allowed());
    assert!(
        policy
            .judge_name(Ecosystem::Npm, "event-stream")
            .is_allowed()
    );
    assert_eq!(
        reason(&judge(Ecosystem::Pypi, "CTX", "0.1.2")),
        "pmcache policy: pypi:ctx@0.1.2 is denied (deny = \"pypi:ctx\")"
    );
    assert_eq!(
        reason(&policy.judge_name(Ecosystem::Pypi, "Ctx")),
        "pmcache policy: pypi:ctx is denied (deny = \"pypi:ctx\")"
    );
    assert_eq!(
        rule(&judge(Ecosystem::Rubygems, "rest-client", "1.6.13")),
        Some(Rule::Deny)
    );
    assert!(judge(Ecosystem::Rubygems, "rest-client", "1.6.14").is_allowed());
    assert_eq!(
        rule(&judge(Ecosystem::Packagist, "Acme/Tool", "v2.0.0")),
        Some(Rule::Deny)
    );
    assert_eq!(
        rule(&policy.judge_name(Ecosystem::Packagist, "acme/tool")),
        Some(Rule::Deny)
    );
    // Another ecosystem's package of the same name is not denied.
    assert!(judge(Ecosystem::Npm, "ctx", "1.0.0").is_allowed());
}

#[test]
fn allow_only_serves_nothing_else() {
    let policy = policy(Config {
        allow_only: strings(&["npm:@acme/*", "npm:left-pad@1.3.0", "pypi:requests"]),
        ..Config::default()
    });
    let judge = |ecosystem, name, version| policy.judge(ecosystem, name, version, None, now());
    assert!(judge(Ecosystem::Npm, "@acme/tool", "1.0.0").is_allowed());
    assert!(judge(Ecosystem::Npm, "left-pad", "1.3.0").is_allowed());
    assert_eq!(
        reason(&judge(Ecosystem::Npm, "left-pad", "1.2.0")),
        "pmcache policy: npm:left-pad@1.2.0 is not in allow_only"
    );
    // A package with an allowed version is served; its other versions are not.
    assert!(policy.judge_name(Ecosystem::Npm, "left-pad").is_allowed());
    assert_eq!(
        reason(&policy.judge_name(Ecosystem::Npm, "lodash")),
        "pmcache policy: npm:lodash is not in allow_only"
    );
    assert!(judge(Ecosystem::Pypi, "Requests", "2.0").is_allowed());
    // A non-empty allow_only that names no gem serves no gem.
    assert_eq!(
        rule(&policy.judge_name(Ecosystem::Rubygems, "rails")),
        Some(Rule::AllowOnly)
    );
}

#[test]
fn rules_apply_in_order_deny_allow_only_age_unknown_time() {
    let policy = policy(Config {
        min_release_age: DAY,
        min_release_age_exclude: strings(&["npm:denied-and-exempt"]),
        deny: strings(&["npm:bad", "npm:denied-and-exempt"]),
        allow_only: strings(&["npm:bad", "npm:young", "npm:denied-and-exempt"]),
        ..Config::default()
    });
    let judge = |name, published| policy.judge(Ecosystem::Npm, name, "1.0.0", published, now());
    // deny before allow_only and age, and exemption does not lift a deny.
    assert_eq!(rule(&judge("bad", Some(now()))), Some(Rule::Deny));
    assert_eq!(
        rule(&judge("denied-and-exempt", Some(now()))),
        Some(Rule::Deny)
    );
    // allow_only before age.
    assert_eq!(rule(&judge("unlisted", Some(now()))), Some(Rule::AllowOnly));
    assert_eq!(rule(&judge("unlisted", None)), Some(Rule::AllowOnly));
    // Then age, then unknown time.
    assert_eq!(
        rule(&judge("young", Some(now()))),
        Some(Rule::MinReleaseAge)
    );
    assert_eq!(rule(&judge("young", None)), Some(Rule::UnknownReleaseTime));
    assert!(judge("young", Some(now() - 2 * DAY)).is_allowed());
}

#[test]
fn an_ecosystem_section_overrides_policy_key_by_key() {
    let global = Config {
        min_release_age: 7 * DAY,
        deny: strings(&["npm:bad", "pypi:ctx"]),
        allow_only: strings(&["pypi:requests"]),
        ..Config::default()
    };
    let npm = Override {
        min_release_age: Some(3 * DAY),
        deny: Some(strings(&["worse@1.0.0", "npm:@evil/*"])),
        unknown_release_time: Some(UnknownReleaseTime::Allow),
        allow_only: Some(strings(&["*"])),
        ..Override::default()
    };
    let pypi = Override {
        allow_only: Some(Vec::new()),
        min_release_age: Some(Duration::ZERO),
        ..Override::default()
    };
    let policy = Policy::new(
        &global,
        &[(Ecosystem::Npm, &npm), (Ecosystem::Pypi, &pypi)],
        &[],
    )
    .unwrap();
    assert_eq!(policy.min_release_age(Ecosystem::Npm), 3 * DAY);
    assert_eq!(policy.min_release_age(Ecosystem::Rubygems), 7 * DAY);
    assert_eq!(policy.min_release_age(Ecosystem::Pypi), Duration::ZERO);
    let npm_judge = |name, version| policy.judge(Ecosystem::Npm, name, version, None, now());
    // The section's deny replaced [policy]'s for npm.
    assert!(npm_judge("bad", "1.0.0").is_allowed());
    assert_eq!(
        reason(&npm_judge("worse", "1.0.0")),
        "pmcache policy: npm:worse@1.0.0 is denied (deny = \"worse@1.0.0\")"
    );
    assert_eq!(rule(&npm_judge("@evil/x", "2.0.0")), Some(Rule::Deny));
    // npm's allow_only serves every npm package; its unknown publish times are allowed.
    assert!(npm_judge("left-pad", "1.0.0").is_allowed());
    // PyPI emptied allow_only and turned the age rule off; its deny is still [policy]'s.
    assert!(
        policy
            .judge(Ecosystem::Pypi, "numpy", "2.0", None, now())
            .is_allowed()
    );
    assert_eq!(
        rule(&policy.judge(Ecosystem::Pypi, "ctx", "0.1", None, now())),
        Some(Rule::Deny)
    );
    // RubyGems has no section: [policy] as written (allow_only names no gem).
    assert_eq!(
        rule(&policy.judge_name(Ecosystem::Rubygems, "rails")),
        Some(Rule::AllowOnly)
    );
}

#[test]
fn npm_unknown_times_allowed_by_its_section_only() {
    let npm = Override {
        unknown_release_time: Some(UnknownReleaseTime::Allow),
        ..Override::default()
    };
    let policy = Policy::new(
        &Config {
            min_release_age: DAY,
            ..Config::default()
        },
        &[(Ecosystem::Npm, &npm)],
        &[],
    )
    .unwrap();
    assert!(
        policy
            .judge(Ecosystem::Npm, "x", "1.0.0", None, now())
            .is_allowed()
    );
    assert_eq!(
        rule(&policy.judge(Ecosystem::Pypi, "x", "1.0", None, now())),
        Some(Rule::UnknownReleaseTime)
    );
}

#[test]
fn the_first_matching_route_wins() {
    let routes = [
        RouteConfig {
            ecosystem: "npm".to_owned(),
            names: strings(&["@acme/secret"]),
            upstream: "none".to_owned(),
        },
        RouteConfig {
            ecosystem: "npm".to_owned(),
            names: strings(&["@acme/*"]),
            upstream: "https://npm.internal.example/".to_owned(),
        },
        RouteConfig {
            ecosystem: "rubygems".to_owned(),
            names: strings(&["acme_gem"]),
            upstream: "http://127.0.0.1:9292".to_owned(),
        },
    ];
    let policy = Policy::new(&Config::default(), &[], &routes).unwrap();
    assert_eq!(policy.routes().len(), 3);
    let secret = policy.route(Ecosystem::Npm, "@acme/secret").unwrap();
    assert_eq!((secret.index(), secret.upstream()), (0, &Upstream::None));
    let tool = policy.route(Ecosystem::Npm, "@acme/tool").unwrap();
    assert_eq!(tool.index(), 1);
    assert!(
        matches!(tool.upstream(), Upstream::Url(url) if url.as_str() == "https://npm.internal.example/")
    );
    let gem = policy.route(Ecosystem::Rubygems, "acme_gem").unwrap();
    assert!(
        matches!(gem.upstream(), Upstream::Url(url) if url.as_str() == "http://127.0.0.1:9292/")
    );
    assert_eq!(gem.ecosystem(), Ecosystem::Rubygems);
    assert!(policy.route(Ecosystem::Rubygems, "Acme_gem").is_none());
    assert!(policy.route(Ecosystem::Npm, "acme").is_none());
}

#[test]
fn bad_settings_are_errors_naming_the_setting() {
    let global = |change: fn(&mut Config)| {
        let mut config = Config::default();
        change(&mut config);
        Policy::new(&config, &[], &[]).unwrap_err().to_string()
    };
    assert_eq!(
        global(|c| c.deny = strings(&["ctx"])),
        "policy.deny: \"ctx\" is not a pattern: it names no ecosystem: start it with pypi:, npm:, rubygems: or packagist:"
    );
    assert_eq!(
        global(|c| c.allow_only = strings(&["npm:ok", "npm:x@1.*"])),
        "policy.allow_only: \"npm:x@1.*\" is not a pattern: a version is exact or *, it takes no glob"
    );
    assert_eq!(
        global(|c| c.min_release_age_exclude = strings(&["npm:@acme/x@1.0.0"])),
        "policy.min_release_age_exclude: \"npm:@acme/x@1.0.0\" is not a pattern: this setting takes names only, without @version"
    );
    let section = Override {
        deny: Some(strings(&["pypi:ctx"])),
        ..Override::default()
    };
    assert_eq!(
        Policy::new(&Config::default(), &[(Ecosystem::Npm, &section)], &[])
            .unwrap_err()
            .to_string(),
        "npm.policy.deny: \"pypi:ctx\" is not a pattern: it names pypi in a setting of the npm ecosystem"
    );
    let section = Override {
        min_release_age_exclude: Some(strings(&["acme/"])),
        ..Override::default()
    };
    assert_eq!(
        Policy::new(&Config::default(), &[(Ecosystem::Packagist, &section)], &[])
            .unwrap_err()
            .to_string(),
        "packagist.policy.min_release_age_exclude: \"acme/\" is not a pattern: a Composer name is vendor/name"
    );
    let routes = [RouteConfig {
        ecosystem: "npm".to_owned(),
        names: strings(&["@acme/*"]),
        upstream: "gopher://127.0.0.1/".to_owned(),
    }];
    assert!(
        Policy::new(&Config::default(), &[], &routes)
            .unwrap_err()
            .to_string()
            .starts_with("routes[0].upstream = \"gopher://127.0.0.1/\" cannot be used")
    );
}

#[test]
fn settings_parse_from_toml() {
    #[derive(serde::Deserialize)]
    struct File {
        policy: Config,
        npm: Section,
        routes: Vec<RouteConfig>,
    }
    #[derive(serde::Deserialize)]
    struct Section {
        policy: Override,
    }
    let file: File = toml::from_str(
        r#"
        [policy]
        min_release_age = "7d"
        min_release_age_exclude = ["npm:@acme/*"]
        unknown_release_time = "allow"
        deny = ["pypi:ctx"]

        [npm.policy]
        min_release_age = "3d"

        [[routes]]
        ecosystem = "npm"
        names = ["@acme/*"]
        upstream = "none"
        "#,
    )
    .unwrap();
    assert_eq!(file.policy.min_release_age, 7 * DAY);
    assert_eq!(file.policy.unknown_release_time, UnknownReleaseTime::Allow);
    assert_eq!(file.policy.allow_only, Vec::<String>::new());
    assert_eq!(file.npm.policy.min_release_age, Some(3 * DAY));
    assert_eq!(file.npm.policy.deny, None);
    let policy = Policy::new(
        &file.policy,
        &[(Ecosystem::Npm, &file.npm.policy)],
        &file.routes,
    )
    .unwrap();
    assert_eq!(policy.min_release_age(Ecosystem::Npm), 3 * DAY);
    assert!(policy.route(Ecosystem::Npm, "@acme/x").is_some());
    assert!(toml::from_str::<Config>("unknown_release_time = \"maybe\"").is_err());
    assert!(toml::from_str::<Override>("min_release_ages = \"1d\"").is_err());
    assert!(toml::from_str::<RouteConfig>("ecosystem = \"npm\"\nnames = []\n").is_err());
}

#[test]
fn the_lists_alone_judge_without_the_age_rule() {
    let policy = policy(Config {
        min_release_age: 3 * DAY,
        deny: strings(&["pypi:ctx@0.2.0", "pypi:evil"]),
        allow_only: strings(&["pypi:*"]),
        ..Config::default()
    });
    // No publish time, and the age rule on: judge refuses, judge_lists does not.
    assert_eq!(
        rule(&policy.judge(Ecosystem::Pypi, "requests", "2.0", None, now())),
        Some(Rule::UnknownReleaseTime)
    );
    assert!(
        policy
            .judge_lists(Ecosystem::Pypi, "requests", "2.0")
            .is_allowed()
    );
    assert_eq!(
        rule(&policy.judge_lists(Ecosystem::Pypi, "Evil", "1.0")),
        Some(Rule::Deny)
    );
    assert_eq!(
        rule(&policy.judge_lists(Ecosystem::Npm, "left-pad", "1.0.0")),
        Some(Rule::AllowOnly)
    );
}
