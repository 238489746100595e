"""The entry points, once: ``scripts/*.py`` in a checkout and the console commands of an installed package.

``pip install .`` (or from a git URL) installs ``ebt-train``, ``ebt-think``, ``ebt-eval``, ``ebt-generate``,
``ebt-export`` and ``ebt-collect``; each composes from the config tree that ships with the package
(:func:`ebt.training.config.config_dir`), so they work from any folder. ``python scripts/train.py ...`` in a checkout
is the same function.
"""

import sys

import hydra
from omegaconf import DictConfig

from ebt.training import grid
from ebt.training.config import CONFIG_DIR  # also registers ${uid:}

CONFIG_PATH = str(CONFIG_DIR)


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="train")
def train_app(cfg: DictConfig) -> None:
    from ebt.training.cli import run_reporting_errors  # imported here so --help stays fast (it imports torch)
    from ebt.training.train import train

    run_reporting_errors(train, cfg)


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="think")
def think_app(cfg: DictConfig) -> None:
    from ebt.analysis.think_report import think
    from ebt.training.cli import run_reporting_errors

    run_reporting_errors(think, cfg)


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="eval")
def eval_app(cfg: DictConfig) -> None:
    from ebt.analysis.evaluate import evaluate
    from ebt.training.cli import run_reporting_errors

    run_reporting_errors(evaluate, cfg)


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="generate")
def generate_app(cfg: DictConfig) -> None:
    from ebt.analysis.generate import generate
    from ebt.training.cli import run_reporting_errors

    run_reporting_errors(generate, cfg)


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="export")
def export_app(cfg: DictConfig) -> None:
    from ebt.training.cli import run_reporting_errors
    from ebt.training.export import export

    run_reporting_errors(export, cfg)


def train() -> None:
    """``ebt-train`` / ``scripts/train.py``: a multirun exits 1 when a job failed, a single run 2 on a user error."""
    train_app()
    sys.exit(grid.exit_status())


def think() -> None:
    """``ebt-think`` / ``scripts/think.py``."""
    think_app()


def evaluate() -> None:
    """``ebt-eval`` / ``scripts/eval.py``."""
    eval_app()


def generate() -> None:
    """``ebt-generate`` / ``scripts/generate.py``."""
    generate_app()


def export() -> None:
    """``ebt-export`` / ``scripts/export.py``."""
    export_app()


def collect() -> None:
    """``ebt-collect`` / ``scripts/collect.py``."""
    from ebt.analysis.collect import main

    sys.exit(main(sys.argv[1:]))
