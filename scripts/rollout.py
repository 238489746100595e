"""k-frame autoregressive rollouts of bouncing-ball world models (an EBT and / or a predictor) from the same context:
PSNR per horizon and ground truth / predictor / EBT pictures side by side.

    python scripts/rollout.py ebt_ckpt=outputs/bouncing/runs/EBT predictor_ckpt=outputs/bouncing/runs/PRED context=3

Options and outputs: :mod:`ebt.analysis.task_eval.rollouts`.
"""

import sys

from ebt.analysis.task_eval.rollouts import main
from ebt.training.cli import run_reporting_errors

if __name__ == "__main__":
    run_reporting_errors(main, sys.argv[1:])
