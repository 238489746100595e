"""Error vs number of in-context examples for trained models and the classical baselines (Garg et al. 2022, Fig. 2).

    python scripts/icl_eval.py ckpt=outputs/icl_linear/runs/RUN/checkpoints/last.ckpt
    python scripts/icl_eval.py 'ckpt=[A.ckpt,B.ckpt]' 'labels=[looped,stack]' eval_loops=12 batches=8

``key=value`` options (``--help`` lists them with their defaults) and outputs: :mod:`ebt.analysis.task_eval.icl_eval`.
"""

from ebt.commands import options_command

if __name__ == "__main__":
    options_command("ebt.analysis.task_eval.icl_eval")
