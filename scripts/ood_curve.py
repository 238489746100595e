"""Thinking improvement vs OOD gap (the EBT paper's Fig. 6) from think.py's CSVs:
``python scripts/ood_curve.py RUN/thinking/thinking.csv [MORE.csv ...] [--out DIR] [--train-steps N]``.

One CSV per seed (each with the predictor's rows, from ``think.py baseline_ckpt=``); mean ± std over them. Options
and outputs: :mod:`ebt.analysis.thinking.ood_curve`.
"""

import sys

from ebt.analysis.thinking.ood_curve import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
