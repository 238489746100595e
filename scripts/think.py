"""Metric versus thinking compute for a trained EBT: ``python scripts/think.py ckpt=PATH [steps=[...]] ...``.

Writes ``thinking.csv``, ``thinking.md`` and ``thinking.png`` next to the checkpoint's run (``out_dir=`` to
change) and prints the table. See ``configs/think.yaml`` for the options and ``ebt/system2.py`` for definitions.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from ebt import config as _resolvers  # noqa: E402,F401  (registers ${uid:})
from ebt.cli import run_reporting_errors  # noqa: E402


@hydra.main(version_base="1.3", config_path="../configs", config_name="think")
def main(cfg: DictConfig) -> None:
    from ebt.think import think  # imported here so --help stays fast

    run_reporting_errors(think, cfg)


if __name__ == "__main__":
    main()
