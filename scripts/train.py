"""Train any model on any task: ``python scripts/train.py [group=option ...] [key=value ...]``.

``python scripts/train.py --help`` lists the config groups; ``--cfg job`` prints the composed config.
Ablation grids: ``python scripts/train.py -m +sweep=mixers`` (see docs/ablation_grids.md); a multirun exits 1
when a job failed (the others still run), a single run exits 2 on a user error.
"""

from ebt.commands import train

if __name__ == "__main__":
    train()
