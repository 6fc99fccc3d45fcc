#!/bin/bash
# LEGACY: CIFAR-10 on TSUBAME3.0 (Univa Grid Engine), retired. Its newest
# NCCL module (2.8) is older than the 2.16 CuPy 13 needs, so the preflight
# stops a job at once unless PYTHON names an environment with a newer NCCL
# of its own (docs/cluster.md). Kept for sites with TSUBAME3-like nodes:
# it is jobscripts/tsubame4.sh with f_node (4 P100 GPUs) resources.
#
#   qsub -g tga-xxx -v OUT=runs/lenet5 jobscripts/tsubame3.sh
#
# The node count is the f_node request below (qsub -l f_node=N overrides it):
# P = 4 x N processes, one per GPU.
#$ -S /bin/bash
#$ -cwd
#$ -l f_node=4
#$ -l h_rt=24:00:00
#$ -N vogn-cifar10
#$ -j y
set -euo pipefail

MODULES=${MODULES:-cuda cudnn nccl openmpi}  # the site's defaults
USAGE='qsub -g GROUP -v OUT=runs/lenet5 jobscripts/tsubame3.sh'
[[ -f jobscripts/tsubame4.sh ]] || { echo "run from the chainer-vogn folder: cd there, then qsub (#$ -cwd)" >&2; exit 1; }
. jobscripts/tsubame4.sh
