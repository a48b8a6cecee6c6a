//! The fleet's supply-chain policy: which versions of which packages pmcache serves, and where private names go.
//!
//! pmcache sees every install of a fleet, so one policy here applies to every client of all
//! four ecosystems, whatever its version and settings: a minimum release age
//! (`min_release_age`, with exempt names and a rule for versions without a publish time),
//! `deny` and `allow_only` lists, and `[[routes]]` that keep private names away from the public
//! upstreams. This crate owns the rules, their configuration and their judgements; it does no
//! I/O. The frontends ask it about each version they list or serve ([`Policy::judge`]) and
//! each name they fetch ([`Policy::judge_name`], [`Policy::route`]), so that a rule written once
//! applies alike to metadata and artifacts, cached or not.
//!
//! Invariants: every name is compared in the one spelling its ecosystem gives all spellings of
//! it ([`Ecosystem::normalize_name`]), so no spelling slips past a rule or a route; a policy
//! that compiled has no pattern that failed to parse; judgements are pure functions of the
//! policy, the package, its publish time and the time now.

mod config;
mod ecosystem;
mod pattern;
mod policy;
#[cfg(test)]
mod properties;
mod published;
mod route;
mod verdict;

pub use config::{Config, Override, RouteConfig, UnknownReleaseTime};
pub use ecosystem::{Ecosystem, UnknownEcosystem};
pub use pattern::{Pattern, PatternError, Versions};
pub use policy::Policy;
pub use published::parse_time;
pub use route::{Route, Upstream, upstream_url};
pub use verdict::{Refusal, Rule, Verdict, compact};

/// A setting the policy cannot be built from, named as the configuration names it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A pattern of a list setting (`policy.deny`, `npm.policy.allow_only`, `routes[0].names`).
    #[error("{key}: {error}")]
    Pattern {
        /// The setting.
        key: String,
        /// The pattern and what is wrong with it.
        error: PatternError,
    },
    /// A route's `ecosystem`.
    #[error("routes[{index}].ecosystem: {error}")]
    RouteEcosystem {
        /// The entry's place in `[[routes]]`, from 0.
        index: usize,
        /// What is wrong with it.
        error: String,
    },
    /// A route without names.
    #[error("routes[{index}].names is empty: a route names at least one package")]
    RouteWithoutNames {
        /// The entry's place in `[[routes]]`, from 0.
        index: usize,
    },
    /// A route's `upstream`.
    #[error("routes[{index}].upstream = {upstream:?} cannot be used: {why}")]
    RouteUpstream {
        /// The entry's place in `[[routes]]`, from 0.
        index: usize,
        /// The value as written.
        upstream: String,
        /// Why it cannot be used.
        why: String,
    },
}

/// This crate's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;
