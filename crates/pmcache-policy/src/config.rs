//! The policy's settings as written: `[policy]`, the per-ecosystem `[<ecosystem>.policy]`
//! sections that override it key by key, and `[[routes]]`. Patterns stay text here;
//! [`Policy::new`](crate::Policy::new) parses and checks them.

use std::time::Duration;

/// The `[policy]` section: the rules of every ecosystem, unless its own section overrides them.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Versions published less than this long ago are hidden; `0s` turns the rule off. Default
    /// `0s`.
    #[serde(with = "humantime_serde")]
    pub min_release_age: Duration,
    /// Names (`ecosystem:name` globs, no version) the age rule does not apply to: your own
    /// packages, say. Default none.
    pub min_release_age_exclude: Vec<String>,
    /// What the age rule does with a version whose publish time is unknown. Default `deny`.
    pub unknown_release_time: UnknownReleaseTime,
    /// Patterns (`ecosystem:name[@version]`) never served. Default none.
    pub deny: Vec<String>,
    /// When not empty, only packages matching one of these patterns are served at all. Default
    /// none: every package.
    pub allow_only: Vec<String>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            min_release_age: Duration::ZERO,
            min_release_age_exclude: Vec::new(),
            unknown_release_time: UnknownReleaseTime::Deny,
            deny: Vec::new(),
            allow_only: Vec::new(),
        }
    }
}

/// A `[<ecosystem>.policy]` section: each key set replaces the `[policy]` key of the same name
/// for that ecosystem (lists are replaced, not extended). Its patterns may leave out the
/// `ecosystem:` prefix. Default: every key unset.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Override {
    /// Replaces `policy.min_release_age`.
    #[serde(
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub min_release_age: Option<Duration>,
    /// Replaces `policy.min_release_age_exclude`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_release_age_exclude: Option<Vec<String>>,
    /// Replaces `policy.unknown_release_time`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unknown_release_time: Option<UnknownReleaseTime>,
    /// Replaces `policy.deny`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deny: Option<Vec<String>>,
    /// Replaces `policy.allow_only`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_only: Option<Vec<String>>,
}

/// What the age rule does with a version whose publish time the upstream does not give.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownReleaseTime {
    /// Hidden, as if it were too young: a release cannot dodge the rule by hiding its date.
    #[default]
    Deny,
    /// Served.
    Allow,
}

impl UnknownReleaseTime {
    /// `deny` or `allow`, as configured.
    pub fn as_str(self) -> &'static str {
        match self {
            UnknownReleaseTime::Deny => "deny",
            UnknownReleaseTime::Allow => "allow",
        }
    }
}

/// A `[[routes]]` entry: packages that go to another upstream than the ecosystem's, or to none.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// `pypi`, `npm`, `rubygems` or `packagist`.
    pub ecosystem: String,
    /// Name globs (no version); the `ecosystem:` prefix may be left out.
    pub names: Vec<String>,
    /// The base URL (http or https) these packages are fetched from, or `none`: pmcache answers
    /// 404 itself and asks no upstream.
    pub upstream: String,
}
