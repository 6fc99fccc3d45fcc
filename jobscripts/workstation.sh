#!/bin/bash
# CIFAR-10 on one machine with several GPUs and no scheduler: VOGN on all
# its GPUs (SAMPLES sample groups, default 4), the Adam and MC-dropout baselines, then
# evaluate.py on the three runs, with the settings of configs/, as the
# cluster scripts do. From anywhere, with the environment installed
# (README's install line, or docs/cluster.md's conda environment) and the
# data in data/ (docs/reproduce.md):
#
#   OUT=runs/lenet5 GPUS=4 bash jobscripts/workstation.sh
#
# It leaves the report and the ROC figure in $OUT/report. Run it again with
# the same OUT after an interruption: every training resumes from its newest
# snapshot (train.py --resume); finished ones end at once. The settings (OUT,
# RUN, SAMPLES, ARCH, DEVICE, PYTHON...) are those of jobscripts/common.sh,
# which holds the body of the job; no modules are loaded unless MODULES names
# them. A relative OUT is relative to the chainer-vogn folder.
set -euo pipefail
cd "$(dirname "$0")/.."

# The GPUs to use, one process each; by default all that nvidia-smi lists.
# On the CPU (DEVICE=-1), the number of processes.
GPUS=${GPUS:-$(nvidia-smi --list-gpus 2>/dev/null | grep -c '^GPU' || true)}
GPUS_PER_NODE=$GPUS
NODES=1
NODES_FROM=GPUS
USAGE='OUT=runs/lenet5 GPUS=4 bash jobscripts/workstation.sh'
PYTHON=${PYTHON:-$(command -v python3 || echo python3)}  # the active environment's
MODULES=${MODULES-}
MPIEXEC=${MPIEXEC:-mpiexec}
LAUNCHER=$MPIEXEC

if ((GPUS < 1)); then
  echo "GPUS=$GPUS: nvidia-smi lists no GPU; set GPUS, or DEVICE=-1 GPUS=2 for the CPU: $USAGE" >&2
  exit 1
fi
launch() {  # launch PROCESSES COMMAND...
  local processes=$1 mpi=("$MPIEXEC")
  shift
  if "$MPIEXEC" --version 2>&1 | grep -q 'Open MPI'; then
    mpi+=(--oversubscribe)  # Open MPI counts cores, not GPUs
    if (($(id -u) == 0)); then
      mpi+=(--allow-run-as-root)
    fi
  fi
  "${mpi[@]}" -n "$processes" "$@"
}

. jobscripts/common.sh
run_job
