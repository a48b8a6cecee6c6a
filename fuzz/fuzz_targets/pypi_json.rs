//! PEP 691 JSON project pages and root lists from an upstream (`pmcache_fuzz::pypi`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pmcache_fuzz::pypi;

fuzz_target!(|data: &[u8]| pypi::check(data, pypi::JSON));
