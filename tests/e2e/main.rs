//! End-to-end tests: real clients against pmcache and fixture upstreams on loopback.

mod concurrency;
mod concurrency_npm;
mod faults;
mod hardening;
mod live;
mod npm;
mod packagist;
mod pypi;
mod rubygems;
mod soak;
mod stale;
mod store;
mod support;
