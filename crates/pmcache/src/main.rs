//! The pmcache binary.
fn main() {}
