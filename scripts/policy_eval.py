"""Closed-loop evaluation of nav2d policies: ``python scripts/policy_eval.py RUN [RUN ...] --out DIR``.

RUN is a ``scripts/train.py`` run folder (or ``.ckpt``) on ``data=nav2d``: a predictor, diffusion or EBT policy (the
kind is read from the checkpoint; several runs of one kind are seeds, ``--config NAME`` labels a tuning candidate).
Writes ``policy_eval.csv``, ``policy_summary.csv`` (mean, std, 95 % t-interval over seeds), ``policy_selection.csv``
(settings chosen on val, reported on test / ood), ``policy_eval.json``, ``policy_eval.md`` and ``policy_curve.png`` to
DIR; ``--merge`` joins earlier evaluations, ``--doc FILE`` writes the tables into FILE's ``<!-- policy_eval:NAME -->``
blocks. Options and definitions: :mod:`ebt.analysis.task_eval.policy_eval` (``--help``).
"""

import sys

from ebt.analysis.task_eval.policy_eval import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
