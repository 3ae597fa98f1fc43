#!/usr/bin/env bash
# The measured peaks `moram plan` is checked against (crates/moram-cl/src/plan/tests.rs):
# `moram-bench train` cases (r = 8 atoms on every linear of the last 8 blocks, one task) on
# SmolLM2-135M and Gemma 3 270M from their GGUF assets (`cargo xtask setup`), f32 and bf16 base
# weights, one process per case (its peak RSS is its own), one thread.
#
#   cargo build --release -p moram-bench && benchmarks/plan_peaks.sh > benchmarks/results/plan.json
set -euo pipefail
cd "$(dirname "$0")/.."
export LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-$PWD/.libtorch/lib}
assets=${MORAM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/moram}/assets
models=("smollm2-135m:$assets/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "gemma-3-270m:$assets/gemma3/gemma-3-270m-q4_k_m.gguf")
echo '{'
echo "  \"machine\": \"$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores\","
echo "  \"date\": \"$(date -u +%Y-%m-%d)\", \"commit\": \"$(git rev-parse --short HEAD)\","
echo '  "cases": ['
first=1
for entry in "${models[@]}"; do
  model=${entry%%:*}; gguf=${entry#*:}
  size=$(stat -c %s "$gguf")
  for dtype in f32 bf16; do
    flag=$([ $dtype = bf16 ] && echo --bf16 || true)
    for case in train_1024 train_2048 eval_long eval_meetingbank; do
      row=$(./target/release/moram-bench --threads 1 --reps 1 train --gguf "$gguf" --case $case $flag | tail -1)
      peak=$(sed -E 's/.*"peak_rss_mb":([0-9.]+).*/\1/' <<<"$row")
      [ $first = 1 ] || echo ','
      first=0
      printf '    {"model": "%s", "gguf_bytes": %s, "dtype": "%s", "case": "%s", "peak_rss_mib": %.1f}' \
        "$model" "$size" $dtype $case "$peak"
    done
  done
done
echo
echo '  ]'
echo '}'
