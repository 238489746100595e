"""Metric versus thinking compute for a trained EBT: ``python scripts/think.py ckpt=RUN [steps=[...]] ...``.

``ckpt=`` is a run folder of ``scripts/train.py`` (its ``checkpoints/last.ckpt``) or a ``.ckpt`` file;
``+data.KEY=VALUE`` overrides the stored data config (a moved corpus: ``+data.task.path=...``). Writes
``thinking.csv``, ``thinking.md``, ``thinking.png``, ``verifier.csv`` and ``thinking_energy.png`` into the run's
``thinking/`` folder (``out_dir=`` to change),
prints the table, and shows its progress on stderr. See ``configs/think.yaml`` for the options (defaults sized for
about a minute on a 2-core CPU) and ``ebt/analysis/thinking_eval.py`` for definitions.
"""

import hydra
from omegaconf import DictConfig

from ebt.training import config  # noqa: F401  (registers ${uid:})
from ebt.training.cli import run_reporting_errors


@hydra.main(version_base="1.3", config_path="../configs", config_name="think")
def main(cfg: DictConfig) -> None:
    from ebt.analysis.think_report import think  # imported here so --help stays fast

    run_reporting_errors(think, cfg)


if __name__ == "__main__":
    main()
