#!/usr/bin/env bash
# Runs every cargo-fuzz target for a while (default 30 s each):
#   bash scripts/fuzz.sh            # 30 s per target (what CI runs)
#   bash scripts/fuzz.sh 3600       # an hour per target
#   bash scripts/fuzz.sh 600 policy_input
# Seeds are in fuzz/corpus/<target>; inputs that once crashed a target are
# kept in fuzz/regressions/<target> and replayed first. New corpus entries go
# to a scratch directory so the committed seeds stay small.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-30}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(request_parsing model_package token_parsing policy_input)
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  t0=$SECONDS
  cargo install cargo-fuzz --locked --version 0.13.2
  echo "-- cargo install cargo-fuzz: $((SECONDS - t0)) s"
fi
# cargo-fuzz passes nightly-only -Z flags; this lets the stable toolchain take them.
export RUSTC_BOOTSTRAP=1
cd fuzz
t0=$SECONDS
cargo fuzz build --sanitizer none
echo "-- fuzz build: $((SECONDS - t0)) s"
for t in "${targets[@]}"; do
  scratch="$(mktemp -d)"
  dirs=("$scratch" "corpus/$t")
  if [ -d "regressions/$t" ]; then dirs+=("regressions/$t"); fi
  echo "== fuzzing $t for ${seconds}s"
  # libFuzzer's progress goes to a file: a CI log's tail then shows each
  # target's last lines and the step times, not thousands of REDUCE lines.
  log="$scratch.log"
  if ! cargo fuzz run --sanitizer none "$t" "${dirs[@]}" -- -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=65536 >"$log" 2>&1; then
    tail -n 80 "$log"
    echo "FAILED: fuzz target $t (the crashing input is under fuzz/artifacts/$t)"
    exit 1
  fi
  tail -n 2 "$log"
  rm -rf "$scratch" "$log"
done
