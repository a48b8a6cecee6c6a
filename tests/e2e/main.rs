//! End-to-end tests: real clients against pmcache and fixture upstreams on loopback.

mod npm;
mod packagist;
mod pypi;
mod rubygems;
mod store;
mod support;
