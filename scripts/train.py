"""Train any model on any task: ``python scripts/train.py [group=option ...] [key=value ...]``.

``python scripts/train.py --help`` lists the config groups; ``--cfg job`` prints the composed config.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from ebt import config as _resolvers  # noqa: E402,F401  (registers ${uid:})
from ebt.cli import run_reporting_errors  # noqa: E402


@hydra.main(version_base="1.3", config_path="../configs", config_name="train")
def main(cfg: DictConfig) -> None:
    from ebt.train import train  # imported here so --help stays fast

    run_reporting_errors(train, cfg)


if __name__ == "__main__":
    main()
