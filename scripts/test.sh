#!/usr/bin/env bash
# The one test command (README; CI's .ci/run calls it): installs what the tests need, then runs
# the formatter check, clippy and every test of the workspace, end-to-end tests included, then
# the live tests when their upstream answers.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-test-deps.sh
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
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

# Why the live tests cannot run here, or nothing when they can. They (tests/e2e/live.rs) use
# only the PyPI index; a live test of another upstream adds its probe here.
live_skip_reason() {
  local index
  if ! index=$(PIP_DISABLE_PIP_VERSION_CHECK=1 pip_index 2>/dev/null) || [[ -z $index ]]; then
    echo "the index the local pip uses could not be determined"
  elif ! curl -q -sf -o /dev/null --max-time 10 -H 'Accept: application/vnd.pypi.simple.v1+json' \
    "${index}pip/"; then
    echo "the index the local pip uses did not answer a project page within 10 s"
  fi
}

# Ignored by default (they need the network): run them by name only when the probe passed.
reason=$(live_skip_reason)
if [[ -n $reason ]]; then
  echo "live tests: SKIPPED ($reason)"
else
  echo "live tests: the index the local pip uses answers; running them"
  cargo test -p pmcache --test e2e --locked -- --ignored live_
fi
