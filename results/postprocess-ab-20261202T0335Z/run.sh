#!/usr/bin/env bash
# Issue 27 items 7 and 8 before and after, back to back on one quiet machine: the same six cells run by the code
# before (85b8ac0, a git worktree) and after, each with its own fresh prepare cache; then the class-map ratio
# benchmark (old path against new in one process). Each command runs from its own checkout: `python -m` imports
# the segbench of the current directory. summary.md is made by summarise.py from the two run folders.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
(cd /work/wt/base && SEGBENCH_CACHE_DIR=/tmp/ab-cache-before python -m segbench run "$here/postprocess-ab.yaml" --out "$here/runs/before" 2>&1 | tee "$here/runs/before.txt")
(cd /work/main && SEGBENCH_CACHE_DIR=/tmp/ab-cache-after python -m segbench run "$here/postprocess-ab.yaml" --out "$here/runs/after" 2>&1 | tee "$here/runs/after.txt")
(cd /work/main && python -m segbench.bench.postprocess 2>&1 | tee "$here/postprocess-ratio.txt")
