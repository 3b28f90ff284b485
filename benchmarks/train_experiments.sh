#!/usr/bin/env bash
# Trains shipped experiments one after the other on the real data and prints each one's metrics.
# Usage: benchmarks/train_experiments.sh [EXPERIMENT ...]   (default: the five accuracy experiments)
set -u
cd "$(dirname "$0")/.."
experiments=("$@")
[ ${#experiments[@]} -gt 0 ] || experiments=(mnist_lenet fashion_mnist_cnn cifar10_net cifar10_deep cifar10_aug)
for name in "${experiments[@]}"; do
  run_dir="runs/$name/accuracy-$(date +%Y%m%d-%H%M%S)"
  echo "== $name -> $run_dir ($(date -u +%FT%TZ))"
  start=$SECONDS
  .venv/bin/python -m pipeline train "$name" --run-dir "$run_dir" || echo "!! $name failed"
  echo "== $name wall: $((SECONDS - start)) s"
  cat "$run_dir/metrics.json" 2>/dev/null
done
