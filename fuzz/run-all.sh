#!/usr/bin/env bash
# Runs every fuzz target in turn (one fuzzing process at a time), each for SECONDS (default
# 600), logging to $WORK/<target>.log. New corpus entries go to $WORK/corpus/<target>/, not
# to the committed seeds in fuzz/corpus/<target>/ (which are read as a second corpus).
#   fuzz/run-all.sh [target...]      SECONDS_PER_TARGET=60 fuzz/run-all.sh record
set -euo pipefail
cd "$(dirname "$0")"
SECONDS_PER_TARGET="${SECONDS_PER_TARGET:-600}"
WORK="${WORK:-$HOME/.cache/typed-kv-fuzz-work}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/typed-kv-fuzz}"
# The recovery target writes a store per input: keep it in memory.
export TMPDIR="${TMPDIR:-/dev/shm}"
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(record recovery hint table_dir ordered_key value_formats)
mkdir -p "$WORK"
for target in "${targets[@]}"; do
  mkdir -p "$WORK/corpus/$target"
  echo "== $target: $(date -u +%FT%TZ)" | tee "$WORK/$target.log"
  # Bounded memory (no allocation over 256 MiB, RSS under 2 GiB) and no input over 10 s.
  corpora=("$WORK/corpus/$target" "corpus/$target")
  [ -d "regressions/$target" ] && corpora+=("regressions/$target")
  cargo +nightly fuzz run "$target" "${corpora[@]}" -- \
    -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=2048 -malloc_limit_mb=256 -timeout=10 \
    -print_final_stats=1 >>"$WORK/$target.log" 2>&1 || echo "!! $target exited with $?" | tee -a "$WORK/$target.log"
  echo "== $target done: $(date -u +%FT%TZ)" | tee -a "$WORK/$target.log"
done
