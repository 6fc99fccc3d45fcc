#!/bin/bash
# The whole pipeline on one machine: VOGN sample-parallel under mpiexec, the
# Adam and MC-dropout baselines, then evaluate.py on the three runs, all in
# one folder. `make demo` runs it. By default it trains a small MLP on the
# CPU on scikit-learn's bundled 8x8 digits, classes 0-4, and evaluates with
# classes 5-9 as out-of-distribution data; then the same three again on the
# same images with 30 % of their labels wrong (NOISE), trained for longer,
# where Adam learns the wrong labels by heart and VOGN stays calibrated:
# a few minutes on two cores.
#
#   bash jobscripts/local.sh
#   DEVICE=0 NP=4 SAMPLES=2 OUT=gpu-demo bash jobscripts/local.sh   # 4 GPUs
#
# Every variable below can be set in the environment. Run again with the same
# OUT, it resumes unfinished runs from their newest snapshot (train.py
# --resume) and writes the report anew.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-demo-output}       # runs in $OUT/{vogn,adam,mcdropout}, report in $OUT/report
EPOCHS=${EPOCHS:-10}
NOISE=${NOISE-0.3}            # then label noise: runs and report in $OUT/noisy; empty: skip
NOISY_EPOCHS=${NOISY_EPOCHS:-40}
# More train.py options for VOGN; none: its defaults, with tau and the prior
# precision derived from the data set size and the model (docs/tuning.md).
VOGN_OPTIONS=${VOGN_OPTIONS:-}
NP=${NP:-2}                   # VOGN processes P = S x D
SAMPLES=${SAMPLES:-$NP}       # VOGN sample groups S
DEVICE=${DEVICE:--1}          # -1: CPU; d >= 0: rank r uses GPU d + r
PYTHON=${PYTHON:-python3}
MPIEXEC=${MPIEXEC:-mpiexec}
DATASET=${DATASET:-digits}
ARCH=${ARCH:-mlp}
CLASSES=${CLASSES-0-4}        # classes to train on; empty: all of them
OOD=${OOD:-holdout:5-9}       # evaluate.py --ood
MC_SAMPLES=${MC_SAMPLES:-10}  # evaluate.py --mc-samples
DATA_DIR=${DATA_DIR:-data}    # for data sets other than digits

if ((NP % SAMPLES != 0)); then
  echo "SAMPLES=$SAMPLES does not divide NP=$NP" >&2
  exit 1
fi
for program in "$PYTHON" "$MPIEXEC"; do
  if ! command -v "$program" >/dev/null; then
    echo "$program not found: set PYTHON and MPIEXEC (make demo does)" >&2
    exit 1
  fi
done

mpi=("$MPIEXEC")
if "$MPIEXEC" --version 2>&1 | grep -q 'Open MPI'; then
  mpi+=(--oversubscribe)  # more processes than cores are fine here
  if (($(id -u) == 0)); then
    mpi+=(--allow-run-as-root)
  fi
fi
data=(--dataset "$DATASET" --arch "$ARCH" --data-dir "$DATA_DIR")
if [[ -n $CLASSES ]]; then
  data+=(--classes "$CLASSES")
fi
communicator=naive
if ((DEVICE >= 0)); then  # rank r uses GPU DEVICE + r: check them first
  communicator=pure_nccl
  "$PYTHON" -m chainer_vogn.preflight --gpus $((DEVICE + NP)) --launcher "$MPIEXEC"
fi

train() {  # train FOLDER OPTIMIZER PROCESSES [more train.py options]
  local folder=$1 optimizer=$2 processes=$3
  shift 3
  echo "== $optimizer on $processes process(es) ($folder)"
  "${mpi[@]}" -n "$processes" "$PYTHON" train.py --optimizer "$optimizer" \
    "${data[@]}" --device "$DEVICE" --communicator "$communicator" \
    --out "$folder/$optimizer" --resume --no-progress "$@"
}

read -r -a vogn_options <<<"$VOGN_OPTIONS"
compare() {  # compare FOLDER [more train.py options]: three runs, one report
  local folder=$1
  shift
  train "$folder" vogn "$NP" --samples "$SAMPLES" "$@" \
    ${vogn_options[@]+"${vogn_options[@]}"}
  # The baselines on D = P / S processes: the same examples per step as VOGN.
  train "$folder" adam $((NP / SAMPLES)) "$@"
  train "$folder" mcdropout $((NP / SAMPLES)) "$@"
  echo "== evaluate.py on $NP process(es) ($folder)"
  "${mpi[@]}" -n "$NP" "$PYTHON" evaluate.py "$folder/vogn" "$folder/adam" \
    "$folder/mcdropout" --ood "$OOD" --mc-samples "$MC_SAMPLES" \
    --device "$DEVICE" --out "$folder/report"
}

compare "$OUT" --epochs "$EPOCHS"
if [[ -n $NOISE ]]; then
  compare "$OUT/noisy" --epochs "$NOISY_EPOCHS" --label-noise "$NOISE"
fi

echo
echo "Everything is in $(cd "$OUT" && pwd):"
echo "  vogn/ adam/ mcdropout/  the runs: config.json model.npz log loss.png accuracy.png"
echo "  report/                 $(cd "$OUT/report" && echo *)"
if [[ -n $NOISE ]]; then
  echo "  noisy/                  the same with $NOISE of the training labels wrong: noisy/report/report.md"
fi
