#!/bin/bash
# Usage: MD=0 scripts/dagger_rounds.sh  (MD: trust region, 0 = unbounded); needs runs/mw/{base4k,align} and runs/mw/dag/round0.safetensors (docs/results.md)
# Multi-round DAgger with data aggregation (issue 15): round k fits the residual on every round so far
# (unbounded unless MD is set), then rolls the fit out from fresh post-training init states and relabels.
# The success of each round's rollouts is the policy's success on post-training init states (96 episodes).
set -e
cd "$(dirname "$0")/.."

PY=${PY:-.venv/bin/python}
MD=${MD:-0}
OUT=runs/mw/dagk/md$MD
mkdir -p $OUT
TASKS=pick-place-v3,bin-picking-v3,assembly-v3,shelf-place-v3
DATA="runs/mw/dag/round0.safetensors"
for k in 1 2 3 4 5 6; do
  if [ ! -f $OUT/fit-k$k/fit.json ]; then
    $PY scripts/dagger_oracle.py fit --base runs/mw/base4k --align runs/mw/align --data $DATA --head latent --steps 1500 --lr 1e-3 --fit-max-delta $MD --max-delta $MD --seed 0 --out $OUT/fit-k$k
  fi
  FIRST=$((24 + 24 * k))
  if [ ! -f $OUT/round$k.safetensors ]; then
    $PY scripts/dagger_oracle.py collect --base runs/mw/base4k --align runs/mw/align --policy $OUT/fit-k$k --tasks $TASKS --per-task 24 --first $FIRST --out $OUT/round$k.safetensors
  fi
  DATA="$DATA $OUT/round$k.safetensors"
done
echo DONE
