//! The config section every frontend has (`[pypi]`, `[npm]`, `[rubygems]`, `[packagist]`): the
//! settings they share, written once, with each ecosystem's own settings beside them.

use std::time::Duration;

/// A frontend's config section: `enabled`, `upstream` and `metadata_ttl`, then the ecosystem's
/// own keys (`X`), flattened into the same TOML table so that files read as they always did.
/// Unknown keys are refused: `X`'s fields are taken first, whatever is left is a typo.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
#[serde(bound(
    deserialize = "X: FrontendDefaults + serde::Deserialize<'de>",
    serialize = "X: serde::Serialize"
))]
pub struct FrontendConfig<X> {
    /// Serve this frontend under its mount. Default `true`.
    pub enabled: bool,
    /// Base URL of the upstream (it may carry a path prefix), or `auto` where the ecosystem's
    /// client settings can name one. Default: the ecosystem's ([`FrontendDefaults::UPSTREAM`]).
    pub upstream: String,
    /// How long fetched metadata is served without asking the upstream; `0s` revalidates on
    /// every request. Default: the ecosystem's ([`FrontendDefaults::METADATA_TTL`]).
    #[serde(with = "humantime_serde")]
    pub metadata_ttl: Duration,
    /// `[<ecosystem>.policy]`: this ecosystem's overrides of the fleet's `[policy]`, key by key.
    /// Default: none.
    pub policy: pmcache_policy::Override,
    /// The ecosystem's own settings.
    #[serde(flatten)]
    pub extra: X,
}

/// What differs between frontends' sections: their defaults, and their own keys (the type
/// implementing this; an empty struct for an ecosystem without any).
pub trait FrontendDefaults: Default {
    /// The default `upstream`.
    const UPSTREAM: &'static str;
    /// The default `metadata_ttl`.
    const METADATA_TTL: Duration;
}

impl<X: FrontendDefaults> Default for FrontendConfig<X> {
    fn default() -> FrontendConfig<X> {
        FrontendConfig {
            enabled: true,
            upstream: X::UPSTREAM.to_owned(),
            metadata_ttl: X::METADATA_TTL,
            policy: pmcache_policy::Override::default(),
            extra: X::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ecosystem with one key of its own.
    #[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
    #[serde(default)]
    struct Own {
        hosts: Vec<String>,
    }

    impl Default for Own {
        fn default() -> Own {
            Own {
                hosts: vec!["a".to_owned()],
            }
        }
    }

    impl FrontendDefaults for Own {
        const UPSTREAM: &'static str = "auto";
        const METADATA_TTL: Duration = Duration::from_secs(300);
    }

    type Section = FrontendConfig<Own>;

    #[test]
    fn missing_keys_take_the_ecosystems_defaults() {
        let parsed: Section = toml::from_str("metadata_ttl = \"1m\"").unwrap();
        assert_eq!(parsed.upstream, "auto");
        assert!(parsed.enabled);
        assert_eq!(parsed.metadata_ttl, Duration::from_secs(60));
        assert_eq!(parsed.extra, Own::default());
        assert_eq!(toml::from_str::<Section>("").unwrap(), Section::default());
    }

    #[test]
    fn own_keys_sit_beside_the_shared_ones_and_typos_are_refused() {
        let parsed: Section = toml::from_str("enabled = false\nhosts = [\"b\"]").unwrap();
        assert!(!parsed.enabled);
        assert_eq!(parsed.extra.hosts, ["b"]);
        let error = toml::from_str::<Section>("ttl = \"1m\"").unwrap_err();
        assert!(error.to_string().contains("ttl"), "{error}");
        // Written back, the section is one flat table again.
        let written = toml::to_string(&parsed).unwrap();
        assert_eq!(toml::from_str::<Section>(&written).unwrap(), parsed);
        assert!(written.contains("hosts = [\"b\"]"), "{written}");
    }

    #[test]
    fn the_policy_subsection_overrides_key_by_key() {
        let parsed: Section =
            toml::from_str("enabled = true\n[policy]\nmin_release_age = \"3d\"\n").unwrap();
        assert_eq!(
            parsed.policy.min_release_age,
            Some(Duration::from_secs(3 * 86_400))
        );
        assert_eq!(parsed.policy.deny, None);
        let written = toml::to_string(&parsed).unwrap();
        assert_eq!(toml::from_str::<Section>(&written).unwrap(), parsed);
        let error = toml::from_str::<Section>("[policy]\nmin_age = \"3d\"\n").unwrap_err();
        assert!(error.to_string().contains("min_age"), "{error}");
    }
}
