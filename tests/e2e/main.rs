//! End-to-end tests: real clients against pmcache and fixture upstreams on loopback.

// A test binary has no API: its `pub` items are shared between modules, not exported.
#![allow(unreachable_pub, missing_docs)]
// Tests report what they measured (throughput, timings, skipped live checks) on the terminal.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod admin;
mod auth;
mod concurrency;
mod concurrency_npm;
mod config;
mod faults;
mod hardening;
mod live;
mod npm;
mod packagist;
mod policy;
mod policy_check;
mod policy_packagist;
mod policy_routes;
mod policy_rubygems;
mod pypi;
mod rubygems;
mod soak;
mod stale;
mod store;
mod support;
mod tls;
