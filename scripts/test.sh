#!/usr/bin/env bash
# The one test command (README; CI's .ci/run calls it): installs what the tests need, then runs
# the formatter check, clippy and every test of the workspace, end-to-end tests included.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-test-deps.sh
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
