# shellcheck shell=bash
# The body the cluster scripts share, sourced from the chainer-vogn folder.
#
# A job script (tsubame4.sh, slurm.sh, workstation.sh) holds its scheduler's
# directives, if any, and sets NODES (the nodes granted), NODES_FROM (the
# scheduler's variable for it), GPUS_PER_NODE, USAGE (how to submit it), LAUNCHER and a function
# `launch PROCESSES COMMAND...`; then it calls run_job: the settings are
# checked, the modules loaded, the preflight run (python -m
# chainer_vogn.preflight) and the pipeline, or the step RUN names, started.
# Every training resumes from its newest snapshot (train.py --resume).
#
# A submit script sets GPUS_PER_NODE, NODES and a function
# `submit RUN NODES WALLTIME [JOB ID...]` that prints the job id of RUN,
# to start after the given jobs; then it calls check_submission and
# submit_pipeline.
# shellcheck disable=SC2153,SC2154 # the sourcing script sets NODES, USAGE...

# Settings: edit them here or set them for the job (qsub -v, sbatch's
# environment).
OUT=${OUT:-}                  # required: folder of the runs and the report
RUN=${RUN:-all}               # vogn, adam, mcdropout, evaluate or all
SAMPLES=${SAMPLES:-4}         # VOGN sample groups S; P = S x D
ARCH=${ARCH:-lenet5}          # configs/cifar10_${ARCH}_{vogn,adam,mcdropout}.yaml
DATASET=${DATASET:-cifar10}   # ... configs/${DATASET}_${ARCH}_...
CONFIG_DIR=${CONFIG_DIR:-configs}  # ... ${CONFIG_DIR}/${DATASET}_${ARCH}_...
DEVICE=${DEVICE:-0}           # rank r of a node uses GPU DEVICE + r; -1: the CPU
DATA_DIR=${DATA_DIR:-data}    # cifar-10-python.tar.gz (and SVHN's .mat files)
OOD=${OOD:-svhn}              # evaluate.py --ood
MC_SAMPLES=${MC_SAMPLES:-10}  # evaluate.py --mc-samples
PYTHON=${PYTHON:-~/miniforge3/envs/chainer-vogn/bin/python}
MODULES=${MODULES-cuda cudnn nccl openmpi}  # pin versions: docs/cluster.md; empty: none
WALLTIME=${WALLTIME:-24:00:00}        # submit scripts: per training job
EVAL_WALLTIME=${EVAL_WALLTIME:-02:00:00}

check_layout() {  # check_layout PROCESSES: S must divide them
  if (($1 % SAMPLES != 0)); then
    echo "SAMPLES=$SAMPLES does not divide the $1 processes of $NODES nodes" >&2
    exit 1
  fi
  # The baselines run on D = P / S processes: the same D x batchsize
  # examples per step as VOGN (submit scripts pass SHARDS to the jobs).
  SHARDS=${SHARDS:-$(($1 / SAMPLES))}
}

check_job() {
  : "${OUT:?set OUT to the output folder: $USAGE}"
  : "${NODES:?$NODES_FROM is unset: submit with $USAGE}"
  case $RUN in
    vogn | adam | mcdropout | evaluate | all) ;;
    *) echo "RUN=$RUN: expected vogn, adam, mcdropout, evaluate or all" >&2; exit 1 ;;
  esac
  NP=$((NODES * GPUS_PER_NODE))
  check_layout "$NP"
  if [[ ! -f train.py ]]; then
    echo "run from the chainer-vogn folder: cd there, then submit" >&2
    exit 1
  fi
  if [[ ! -x $PYTHON ]]; then
    echo "PYTHON=$PYTHON is not an interpreter: build the environment (docs/cluster.md) or set PYTHON" >&2
    exit 1
  fi
}

load_modules() {
  [[ -n $MODULES ]] || return 0
  # Batch shells may lack the module command; its scripts are not set -u safe.
  set +u
  # shellcheck source=/dev/null
  type module &>/dev/null || . /etc/profile.d/modules.sh
  # shellcheck disable=SC2086 # MODULES is a list of names
  module load $MODULES
  set -u
}

train() {  # train OPTIMIZER PROCESSES [more train.py options]
  local optimizer=$1 processes=$2
  shift 2
  launch "$processes" "$PYTHON" train.py \
    --config "$CONFIG_DIR/${DATASET}_${ARCH}_${optimizer}.yaml" \
    --data-dir "$DATA_DIR" --device "$DEVICE" --communicator "$COMMUNICATOR" \
    --out "$OUT/$optimizer" --resume --no-progress "$@"
}

evaluate() {  # on the GPUs of one node, which share the Monte Carlo samples
  launch "$GPUS_PER_NODE" "$PYTHON" evaluate.py \
    "$OUT/vogn" "$OUT/adam" "$OUT/mcdropout" \
    --ood "$OOD" --mc-samples "$MC_SAMPLES" --data-dir "$DATA_DIR" \
    --device "$DEVICE" --out "$OUT/report"
}

run_job() {
  check_job
  load_modules
  # On the CPU the processes talk through MPI and the preflight checks the
  # launcher only (--gpus 0).
  local gpus=0
  COMMUNICATOR=naive
  if ((DEVICE >= 0)); then
    gpus=$((DEVICE + GPUS_PER_NODE))
    COMMUNICATOR=pure_nccl
  fi
  "$PYTHON" -m chainer_vogn.preflight --gpus "$gpus" --launcher "$LAUNCHER"
  case $RUN in
    vogn) train vogn "$NP" --samples "$SAMPLES" ;;
    adam | mcdropout) train "$RUN" "$SHARDS" ;;
    evaluate) evaluate ;;
    all)
      train vogn "$NP" --samples "$SAMPLES"
      train adam "$SHARDS"
      train mcdropout "$SHARDS"
      evaluate
      ;;
  esac
}

check_submission() {
  : "${OUT:?set OUT to the output folder: $USAGE}"
  local walltime
  for walltime in "$WALLTIME" "$EVAL_WALLTIME"; do
    if [[ ! $walltime =~ ^[0-9]+:[0-5][0-9]:[0-5][0-9]$ ]]; then
      echo "walltime $walltime: expected HH:MM:SS" >&2
      exit 1
    fi
  done
  check_layout $((NODES * GPUS_PER_NODE))
  if [[ ! -f train.py ]]; then
    echo "run from the chainer-vogn folder: the jobs start where they are submitted" >&2
    exit 1
  fi
}

job_id() {  # job_id TEXT: the first number in what the scheduler printed
  if [[ $1 =~ ([0-9]+) ]]; then
    echo "${BASH_REMATCH[1]}"
  else
    echo "no job id in the scheduler's answer: $1" >&2
    exit 1
  fi
}

submit_pipeline() {
  local nodes=$(((SHARDS + GPUS_PER_NODE - 1) / GPUS_PER_NODE))
  local vogn adam mcdropout evaluate
  vogn=$(submit vogn "$NODES" "$WALLTIME")
  adam=$(submit adam "$nodes" "$WALLTIME")
  mcdropout=$(submit mcdropout "$nodes" "$WALLTIME")
  evaluate=$(submit evaluate 1 "$EVAL_WALLTIME" "$vogn" "$adam" "$mcdropout")
  echo "submitted vogn $vogn, adam $adam, mcdropout $mcdropout and evaluate $evaluate (after the three)"
  echo "report: $OUT/report"
}
