//! What the policy says of one version or package: served, or refused by a named rule with a
//! one-line reason a client can print.

use std::fmt;
use std::time::{Duration, SystemTime};

/// The rule that refused something; its [`as_str`](Rule::as_str) is the metric label `rule`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rule {
    /// The version is younger than `min_release_age`.
    MinReleaseAge,
    /// The age rule is on, the version's publish time is unknown, and `unknown_release_time` is
    /// `deny`.
    UnknownReleaseTime,
    /// A `deny` pattern names it.
    Deny,
    /// `allow_only` is set and names no pattern matching it.
    AllowOnly,
}

impl Rule {
    /// The setting's name: `min_release_age`, `unknown_release_time`, `deny`, `allow_only`.
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::MinReleaseAge => "min_release_age",
            Rule::UnknownReleaseTime => "unknown_release_time",
            Rule::Deny => "deny",
            Rule::AllowOnly => "allow_only",
        }
    }
}

/// Why something is not served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The rule that refused it.
    pub rule: Rule,
    /// What was refused, normalised: `npm:foo@1.2.3`, or `pypi:ctx` for a whole package.
    pub subject: String,
    /// For [`Rule::MinReleaseAge`]: when the version comes of age (published +
    /// `min_release_age`), so that a rendering hiding it can expire then.
    pub matures_at: Option<SystemTime>,
    /// What the reason says after the subject.
    because: String,
}

impl Refusal {
    /// The earlier of `until` and when this refusal's version comes of age: when a rendering
    /// that hides it and others must be made again.
    pub fn first_maturity(&self, until: Option<SystemTime>) -> Option<SystemTime> {
        match (until, self.matures_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub(crate) fn new(rule: Rule, subject: String, because: String) -> Refusal {
        Refusal {
            rule,
            subject,
            matures_at: None,
            because,
        }
    }
}

/// One line: `pmcache policy: npm:foo@1.2.3 was published 2 hours ago; min_release_age is 3d`.
impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pmcache policy: {} {}", self.subject, self.because)
    }
}

/// The policy's answer for a version or a package.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Served.
    Allowed,
    /// Hidden from metadata, and refused (403) as an artifact.
    Refused(Refusal),
}

impl Verdict {
    /// True when served.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Verdict::Allowed)
    }

    /// The refusal, if refused.
    pub fn refusal(&self) -> Option<&Refusal> {
        match self {
            Verdict::Allowed => None,
            Verdict::Refused(refusal) => Some(refusal),
        }
    }
}

const MINUTE: u64 = 60;
const HOUR: u64 = 60 * MINUTE;
const DAY: u64 = 24 * HOUR;

/// An age as people say it, in its largest whole unit: `just now`, `45 seconds ago`,
/// `1 minute ago`, `2 hours ago`, `3 days ago` (hours up to two days, so that "1 day" does not
/// hide 47 hours).
pub(crate) fn ago(age: Duration) -> String {
    let seconds = age.as_secs();
    let (count, unit) = match seconds {
        0 => return "just now".to_owned(),
        s if s < MINUTE => (s, "second"),
        s if s < HOUR => (s / MINUTE, "minute"),
        s if s < 2 * DAY => (s / HOUR, "hour"),
        s => (s / DAY, "day"),
    };
    let plural = if count == 1 { "" } else { "s" };
    format!("{count} {unit}{plural} ago")
}

/// A configured duration, exactly and as short as humantime reads it back: `3d`, `36h`,
/// `90m`, `45s`, `1500ms`.
pub fn compact(duration: Duration) -> String {
    let seconds = duration.as_secs();
    if duration.subsec_nanos() != 0 {
        return format!("{}ms", duration.as_millis());
    }
    match seconds {
        0 => "0s".to_owned(),
        s if s % DAY == 0 => format!("{}d", s / DAY),
        s if s % HOUR == 0 => format!("{}h", s / HOUR),
        s if s % MINUTE == 0 => format!("{}m", s / MINUTE),
        s => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_in_their_largest_whole_unit() {
        for (seconds, text) in [
            (0, "just now"),
            (1, "1 second ago"),
            (59, "59 seconds ago"),
            (60, "1 minute ago"),
            (3599, "59 minutes ago"),
            (2 * HOUR + 59 * MINUTE, "2 hours ago"),
            (47 * HOUR, "47 hours ago"),
            (2 * DAY, "2 days ago"),
            (400 * DAY, "400 days ago"),
        ] {
            assert_eq!(ago(Duration::from_secs(seconds)), text, "{seconds}");
        }
        assert_eq!(ago(Duration::from_millis(999)), "just now");
    }

    #[test]
    fn durations_show_exactly_and_read_back() {
        for (duration, text) in [
            (Duration::ZERO, "0s"),
            (Duration::from_secs(3 * DAY), "3d"),
            (Duration::from_secs(36 * HOUR), "36h"),
            (Duration::from_secs(90 * MINUTE), "90m"),
            (Duration::from_secs(45), "45s"),
            (Duration::from_millis(1500), "1500ms"),
        ] {
            assert_eq!(compact(duration), text);
            assert_eq!(humantime::parse_duration(text).ok(), Some(duration));
        }
    }

    #[test]
    fn rules_are_labelled_by_their_settings() {
        let labels = [
            Rule::MinReleaseAge,
            Rule::UnknownReleaseTime,
            Rule::Deny,
            Rule::AllowOnly,
        ]
        .map(Rule::as_str);
        assert_eq!(
            labels,
            [
                "min_release_age",
                "unknown_release_time",
                "deny",
                "allow_only"
            ]
        );
    }
}
