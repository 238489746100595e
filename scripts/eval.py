"""Evaluate any checkpoint, predictor or EBT, on any split: ``python scripts/eval.py ckpt=RUN [splits=[val,ood,test]]``.

``ckpt=`` is a run folder of ``scripts/train.py`` (its ``checkpoints/last.ckpt``) or a ``.ckpt`` file;
``+data.KEY=VALUE`` overrides the stored data config (a moved corpus: ``+data.task.path=...``). Prints the task's
metrics and loss per split and writes ``eval.csv`` / ``eval.md`` into the run's ``eval/`` folder. Options:
``configs/eval.yaml``; what is computed: :mod:`ebt.analysis.evaluate`.
"""

import hydra
from omegaconf import DictConfig

from ebt.training import config  # noqa: F401  (registers ${uid:})
from ebt.training.cli import run_reporting_errors


@hydra.main(version_base="1.3", config_path="../configs", config_name="eval")
def main(cfg: DictConfig) -> None:
    from ebt.analysis.evaluate import evaluate  # imported here so --help stays fast

    run_reporting_errors(evaluate, cfg)


if __name__ == "__main__":
    main()
