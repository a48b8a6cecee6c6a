//! End-to-end tests: real clients against pmcache and fixture upstreams on loopback.

mod pypi;
mod support;
