#!/usr/bin/env bash
# Runs every cargo-fuzz target of fuzz/ for a bounded time each (docs/fuzzing.md).
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     default: 60 seconds, every target
#
# Not part of scripts/test.sh or CI: it takes minutes and needs libFuzzer; the proptest
# properties in the crates are what CI runs. Exits non-zero when a target crashes (a panic, a
# failed invariant, a timeout), naming the input that did it.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds="${1:-60}"
shift || true
if ! [[ "$seconds" =~ ^[0-9]+$ ]]; then
  echo "usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]" >&2
  exit 2
fi

# cargo-fuzz passes nightly-only flags (-Z, sanitizer coverage); no nightly toolchain is
# installed, and RUSTC_BOOTSTRAP lets the pinned stable one accept them.
export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi

if (($# > 0)); then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list)
fi

# No AddressSanitizer: every crate forbids unsafe code, so it would find nothing that bounds
# checks miss, at a fraction of the speed. Debug assertions (overflow checks) stay on.
cargo fuzz build --sanitizer none

summary=()
failed=()
for target in "${targets[@]}"; do
  # New inputs go to a scratch corpus under target/; the committed seeds stay as they are.
  work="target/corpus/$target"
  log="target/fuzz-$target.log"
  mkdir -p "$work" "corpus/$target"
  echo "== $target: ${seconds}s"
  status=0
  # One process (libFuzzer's default; -jobs would only add a supervisor), a bounded time, and
  # a slow input counted as a failure rather than waited for.
  cargo fuzz run --sanitizer none "$target" "$work" "corpus/$target" -- \
    -max_total_time="$seconds" -timeout=10 -print_final_stats=1 >"$log" 2>&1 || status=$?
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -n1)
  corpus=$(find "$work" -type f | wc -l)
  if ((status == 0)); then
    summary+=("$target: ${runs:-?} runs in ${seconds}s, $corpus inputs in its work corpus, no crash")
  else
    artifact=$(grep -o 'Test unit written to [^ ]*' "$log" | tail -n1 | cut -d' ' -f5)
    summary+=("$target: CRASH after ${runs:-?} runs: ${artifact:-see fuzz/$log}")
    failed+=("$target")
    grep -m1 -A3 "panicked at" "$log" >&2 || tail -n 20 "$log" >&2
    echo "reproduce, in fuzz/: RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer none $target ${artifact:-ARTIFACT}" >&2
  fi
done

printf '%s\n' "${summary[@]}"
if ((${#failed[@]} > 0)); then
  echo "crashed: ${failed[*]} (inputs under fuzz/artifacts/)" >&2
  exit 1
fi
