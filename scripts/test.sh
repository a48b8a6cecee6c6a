#!/usr/bin/env bash
# The one test command (README; CI's .ci/run calls it): installs what the tests need, then runs
# the formatter check, clippy, rustdoc with warnings denied, cargo-deny (bans, licences,
# sources), cargo-machete (unused dependencies) and every test of the workspace, end-to-end
# tests included, then the live tests when their upstream answers.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-test-deps.sh
# cargo-deny and cargo-machete, as installed (pinned) by install-test-deps.sh, which uses the
# same default.
export PATH="${PMCACHE_CARGO_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/pmcache/cargo-tools}/bin:$PATH"
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --workspace --locked --quiet
# Advisories are left out: their database cannot be downloaded here (see deny.toml).
cargo deny --locked check bans licenses sources
cargo machete
cargo test --workspace --locked

# The index the local pip uses, found as pmcache's `upstream = "auto"` finds it: pip's configured
# index-url (environment, then [install], then [global]), else pip's built-in default.
pip_index() {
  python3 - <<'PY'
import subprocess, sys
listing = subprocess.run([sys.executable, "-m", "pip", "config", "list"],
                         capture_output=True, text=True, timeout=60).stdout
for key in (":env:.index-url", "install.index-url", "global.index-url"):
    for line in listing.splitlines():
        if line.startswith(key + "="):
            value = line[len(key) + 1:].strip().strip("'\"").split()
            if value:
                print(value[0].rstrip("/") + "/")
                sys.exit(0)
from pip._internal.models.index import PyPI
print(PyPI.simple_url.rstrip("/") + "/")
PY
}

# Why the live PyPI tests cannot run here, or nothing when they can.
pypi_skip_reason() {
  local index
  if ! index=$(PIP_DISABLE_PIP_VERSION_CHECK=1 pip_index 2>/dev/null) || [[ -z $index ]]; then
    echo "the index the local pip uses could not be determined"
  elif ! curl -q -sf -o /dev/null --max-time 10 -H 'Accept: application/vnd.pypi.simple.v1+json' \
    "${index}pip/"; then
    echo "the index the local pip uses did not answer a project page within 10 s"
  fi
}

# Why the live npm test cannot run here, or nothing when it can.
npm_skip_reason() {
  local registry
  if ! registry=$(npm config get registry 2>/dev/null) || [[ -z $registry ]]; then
    echo "the registry the local npm uses could not be determined"
  elif ! curl -q -sf -o /dev/null --max-time 10 "${registry%/}/is-number"; then
    echo "the registry the local npm uses did not answer a packument within 10 s"
  fi
}

# Ignored by default (they need the network): `live_npm_*` tests need the npm registry, every
# other `live_*` test the PyPI index. Each group runs only when its probe passed, and says so
# when it is skipped.
pypi_reason=$(pypi_skip_reason)
npm_reason=$(npm_skip_reason)
[[ -z $pypi_reason ]] || echo "live PyPI tests: SKIPPED ($pypi_reason)"
[[ -z $npm_reason ]] || echo "live npm tests: SKIPPED ($npm_reason)"
if [[ -z $pypi_reason && -z $npm_reason ]]; then
  echo "live tests: the PyPI index and the npm registry answer; running them"
  cargo test -p pmcache --test e2e --locked -- --ignored live_
elif [[ -z $pypi_reason ]]; then
  cargo test -p pmcache --test e2e --locked -- --ignored live_ --skip live_npm
elif [[ -z $npm_reason ]]; then
  cargo test -p pmcache --test e2e --locked -- --ignored live_npm
fi
