"""Error vs number of in-context examples for trained models and the classical baselines (Garg et al. 2022, Fig. 2).

    python scripts/icl_eval.py ckpt=outputs/icl_linear/runs/RUN/checkpoints/last.ckpt
    python scripts/icl_eval.py 'ckpt=[A.ckpt,B.ckpt]' 'labels=[looped,stack]' eval_loops=12 batches=8

Options and outputs: :mod:`ebt.analysis.task_eval.icl_eval`.
"""

import sys

from ebt.analysis.task_eval.icl_eval import main
from ebt.training.cli import run_reporting_errors

if __name__ == "__main__":
    run_reporting_errors(main, sys.argv[1:])
