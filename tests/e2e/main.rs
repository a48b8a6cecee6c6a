//! End-to-end tests: real clients against pmcache and fixture upstreams on loopback.

mod hardening;
mod npm;
mod packagist;
mod pypi;
mod rubygems;
mod support;
