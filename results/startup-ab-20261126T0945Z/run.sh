#!/usr/bin/env bash
# Alternating before (ac7e8de) / after (HEAD) CLI wall times on the quiet machine; each run with a fresh cache.
set -u
cd /tmp  # not a checkout: python -m puts the working directory first on sys.path
out=/work/bench/out; rm -rf $out; mkdir -p $out
for round in 1 2; do
  for which in before after; do
    for suite in families backends; do
      pp=""; [ $which = before ] && pp=/work/wt/before
      cache=$(mktemp -d /tmp/bench-cache-XXXX)
      start=$(date +%s.%N)
      PYTHONPATH=$pp python -m segbench run /work/bench/$suite.yaml --out $out/$which-$round --cache-dir $cache > $out/$which-$round-$suite.log 2>&1
      rc=$?
      end=$(date +%s.%N)
      echo "$round $which $suite rc=$rc wall=$(python -c "print(round($end-$start,1))")"
      rm -rf $cache
    done
  done
done
