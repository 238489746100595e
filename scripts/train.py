"""Train any model on any task: ``python scripts/train.py [group=option ...] [key=value ...]``.

``python scripts/train.py --help`` lists the config groups; ``--cfg job`` prints the composed config.
Ablation grids: ``python scripts/train.py -m +sweep=mixers`` (see docs/ablation_grids.md); a multirun exits 1
when a job failed (the others still run), a single run exits 2 on a user error.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from ebt import config as _resolvers  # noqa: E402,F401  (registers ${uid:})
from ebt import grid  # noqa: E402  (registers ${grid_dir:} and friends)


@hydra.main(version_base="1.3", config_path="../configs", config_name="train")
def main(cfg: DictConfig) -> None:
    from ebt.cli import run_reporting_errors  # imported here so --help stays fast (it imports torch)
    from ebt.train import train

    run_reporting_errors(train, cfg)


if __name__ == "__main__":
    main()
    sys.exit(grid.exit_status())
