#!/usr/bin/env bash
# Soak run: real pip, npm, gem and composer installs through one pmcache in front of the four
# fixture upstreams (all on 127.0.0.1), with faults injected into random artifacts (corrupt, cut,
# throttled) and pmcache killed with SIGKILL and restarted at random moments. At the end every
# blob is re-hashed (`pmcache verify`), every install was checked against the published bytes,
# every artifact pmcache had committed must still be stored, and a final clean round of every
# install must work. The run itself is tests/e2e/soak.rs (ignored in CI); this wraps it.
#
# Usage: bench/soak.sh [SECONDS] [SEED]      (defaults: 300 seconds, a clock-based seed)
# Environment: SOAK_PROFILE=release|dev (default release); SOAK_REPORT=FILE also writes the
# report there (it always goes to stdout).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-300}"
seed="${2:-}"
profile="${SOAK_PROFILE:-release}"
case "$seconds" in ''|*[!0-9]*) echo "SECONDS must be a number, not '$seconds'" >&2; exit 2 ;; esac
if [ "$seconds" -gt 7200 ]; then
    echo "a soak run is bounded to 2 hours; asked for $seconds s" >&2
    exit 2
fi

scripts/install-test-deps.sh >/dev/null

export PMCACHE_SOAK_SECONDS="$seconds"
[ -n "$seed" ] && export PMCACHE_SOAK_SEED="$seed"
report="$(mktemp)"
trap 'rm -f "$report" "$report.log"' EXIT
export PMCACHE_SOAK_REPORT="$report"

profile_flag=()
[ "$profile" = "release" ] && profile_flag=(--release)
# Whatever happens, the run ends: the soak time plus room for the final round and the build.
timeout $((seconds + 1800)) \
    cargo test "${profile_flag[@]}" -p pmcache --test e2e soak -- --ignored --nocapture \
    > "$report.log" 2>&1 || status=$?
status="${status:-0}"
echo "---- soak report ----"
if [ -s "$report" ]; then cat "$report"; else tail -n 60 "$report.log"; fi
if [ -n "${SOAK_REPORT:-}" ]; then cp "$report" "$SOAK_REPORT"; fi
if [ "$status" -ne 0 ]; then
    echo "soak FAILED (exit $status); full log kept at $report.log" >&2
    trap 'rm -f "$report"' EXIT
fi
exit "$status"
