#!/bin/bash
# LEGACY (TSUBAME3.0 is retired; see jobscripts/tsubame3.sh): submits the
# CIFAR-10 pipeline as four jobs of jobscripts/tsubame3.sh, with f_node
# resources, exactly as jobscripts/tsubame4_submit.sh does on TSUBAME4.0:
#
#   GROUP=tga-xxx OUT=runs/lenet5 jobscripts/tsubame3_submit.sh
set -euo pipefail

RESOURCE=f_node
JOB_SCRIPT=jobscripts/tsubame3.sh
SUBMIT_SCRIPT=jobscripts/tsubame3_submit.sh
[[ -f jobscripts/tsubame4_submit.sh ]] || { echo "run from the chainer-vogn folder: the jobs start where qsub is run" >&2; exit 1; }
. jobscripts/tsubame4_submit.sh
