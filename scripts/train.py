"""Train any model on any task: ``python scripts/train.py [group=option ...] [key=value ...]``.

``python scripts/train.py --help`` lists the config groups; ``--cfg job`` prints the composed config.
Ablation grids: ``python scripts/train.py -m +sweep=mixers`` (see docs/ablation_grids.md); a multirun exits 1
when a job failed (the others still run), a single run exits 2 on a user error.
"""

import sys

import hydra
from omegaconf import DictConfig

from ebt.training import (
    config,  # noqa: F401  (registers ${uid:})
    grid,  # registers ${grid_dir:} and friends
)


@hydra.main(version_base="1.3", config_path="../configs", config_name="train")
def main(cfg: DictConfig) -> None:
    from ebt.training.cli import run_reporting_errors  # imported here so --help stays fast (it imports torch)
    from ebt.training.train import train

    run_reporting_errors(train, cfg)


if __name__ == "__main__":
    main()
    sys.exit(grid.exit_status())
