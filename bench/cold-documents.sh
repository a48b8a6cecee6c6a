#!/usr/bin/env bash
# 200 cold documents at once (100 packuments of the generated 400-package npm tree, tens of
# kilobytes to 8.5 MB, and the 100 generated PyPI project pages, kilobytes to 2 MB), through a
# cold pmcache and directly, side by side in one sitting, ROUNDS times.
#
# The scenario is the end-to-end test
# `concurrency_npm::two_hundred_concurrent_cold_documents_through_one_h2_connection`: both
# upstreams speak HTTPS with HTTP/2 from a test CA on 127.0.0.1, answer after 50-150 ms (npm)
# and 100 ms (PyPI), and each is reached by pmcache over one connection; the client sends all
# 200 requests at once with pnpm's and pip's Accept headers, through pmcache and then directly.
# The test asserts what must hold (all 200, one connection per upstream, peak RSS under
# 200 MB); this script runs it in the release profile and tabulates its figures.
#
#   bench/cold-documents.sh            # 3 rounds
#   ROUNDS=5 bench/cold-documents.sh
set -euo pipefail
cd "$(dirname "$0")/.."

rounds="${ROUNDS:-3}"
test_name="concurrency_npm::two_hundred_concurrent_cold_documents_through_one_h2_connection"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
log="$scratch/cold-documents.log"

echo "building the e2e tests in the release profile (cargo test --release --no-run)" >&2
cargo test --release --locked -p pmcache --test e2e --no-run >&2

printf '| round | through pmcache s | directly s | ratio | pmcache peak RSS MiB |\n'
printf '|-------|------------------|------------|-------|----------------------|\n'
for round in $(seq 1 "$rounds"); do
  if ! timeout 600 cargo test --release --locked -p pmcache --test e2e -- --exact "$test_name" \
    --nocapture >"$log" 2>&1; then
    echo "round $round: the test failed; the end of its output:" >&2
    tail -n 40 "$log" >&2
    exit 1
  fi
  # "200 cold documents (...): through pmcache 3.9s (...), directly 221.5ms (...), 17.6 times;
  #  pmcache peak RSS 190 MiB; ..."
  python3 - "$log" "$round" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
line = next(l for l in text.splitlines() if l.startswith("200 cold documents"))
def seconds(label):
    value, unit = re.search(label + r" ([0-9.]+)(ms|µs|s)", line).groups()
    return float(value) / {"ms": 1e3, "µs": 1e6, "s": 1}[unit]
through, direct = seconds("through pmcache"), seconds("directly")
rss = re.search(r"peak RSS (\d+) MiB", line).group(1)
print(f"| {sys.argv[2]} | {through:.2f} | {direct:.2f} | {through / direct:.1f} | {rss} |")
PY
done
