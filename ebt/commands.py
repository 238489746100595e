"""The entry points, once: ``scripts/*.py`` in a checkout and the console commands of an installed package.

``pip install .`` (or from a git URL) installs ``ebt-train``, ``ebt-think``, ``ebt-eval``, ``ebt-generate``,
``ebt-export`` and ``ebt-collect``; each composes from the config tree that ships with the package
(:func:`ebt.training.config.config_dir`), so they work from any folder. ``python scripts/train.py ...`` in a checkout
is the same function.
"""

import importlib
import sys
from collections.abc import Callable

import hydra
from omegaconf import DictConfig

from ebt.training import grid
from ebt.training.config import CONFIG_DIR  # also registers ${uid:}

CONFIG_PATH = str(CONFIG_DIR)


def hydra_app(config_name: str, target: str) -> Callable[[], None]:
    """A Hydra entry point that composes ``config_name`` and runs ``target`` (``module:function``, imported only when
    the command runs, so ``--help`` stays fast) with user errors as one ``error:`` line (exit status 2), through
    :func:`run_checked`."""

    @hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name=config_name)
    def app(cfg: DictConfig) -> None:
        from ebt.training.cli import run_reporting_errors  # imports torch

        module, name = target.split(":")
        run_reporting_errors(run_checked, getattr(importlib.import_module(module), name), cfg)

    return app


def run_checked(fn: Callable[[DictConfig], object], cfg: DictConfig) -> object:
    """``fn(cfg)`` after the options every entry point shares are checked (``seed``, ``trust_checkpoint``), with
    ``trust_checkpoint`` in force for every checkpoint it loads (:func:`ebt.training.checkpoint.trusting`)."""
    from ebt.training.checkpoint import trusting
    from ebt.training.validation import check_entry_options

    check_entry_options(cfg)
    with trusting(bool(cfg.get("trust_checkpoint", False))):
        return fn(cfg)


train_app = hydra_app("train", "ebt.training.train:train")
think_app = hydra_app("think", "ebt.analysis.think_report:think")
eval_app = hydra_app("eval", "ebt.analysis.evaluate:evaluate")
generate_app = hydra_app("generate", "ebt.analysis.generate:generate")
export_app = hydra_app("export", "ebt.training.export:export")


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


def doc_tables() -> None:
    """``scripts/doc_tables.py``: the results tables of docs/ from their committed CSVs (a checkout only)."""
    from ebt.analysis.doc_tables import main

    sys.exit(main(sys.argv[1:]))
