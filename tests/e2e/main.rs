//! End-to-end tests: real clients against pmcache and fixture upstreams on loopback.

mod npm;
mod pypi;
mod rubygems;
mod support;
