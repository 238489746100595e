"""The entry points, once: ``scripts/*.py`` in a checkout and the console commands of an installed package.

One option style: ``key=value``. The commands that compose a config (train, think, eval, generate, export) take
Hydra's overrides; every other script is an :func:`options_command`: ``key=value`` pairs (lists as ``key=[a,b]``)
read over its module's ``DEFAULTS``, an unknown key refused with the valid ones, ``--help`` printing the module's
docstring and the defaults.

``pip install .`` (or from a git URL) installs ``ebt-train``, ``ebt-think``, ``ebt-eval``, ``ebt-generate``,
``ebt-export`` and ``ebt-collect``; each composes from the config tree that ships with the package
(:func:`ebt.training.config.config_dir`), so they work from any folder. ``python scripts/train.py ...`` in a checkout
is the same function.
"""

import importlib
import sys
from collections.abc import Callable

import hydra
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ebt.errors import ConfigError
from ebt.options import read_options, usage
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
think_app = hydra_app("think", "ebt.analysis.thinking.report:think")
eval_app = hydra_app("eval", "ebt.analysis.tools.evaluate:evaluate")
generate_app = hydra_app("generate", "ebt.analysis.tools.generate:generate")
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
    """``ebt-collect``: ``scripts/collect.py``'s key=value command (:mod:`ebt.analysis.tools.collect`)."""
    options_command("ebt.analysis.tools.collect")


# ----------------------------------------------------------------------------------------- key=value scripts
def options_command(target: str, argv: list[str] | None = None) -> None:
    """Run the key=value script whose module is ``target`` (it defines ``DEFAULTS`` and ``main(cfg)``): user errors
    as one ``error:`` line (exit status 2); an int that ``main`` returns is the exit status."""
    from ebt.training.cli import run_reporting_errors  # imports torch

    argv = sys.argv[1:] if argv is None else argv
    module = importlib.import_module(target)
    if any(a in ("-h", "--help") for a in argv):
        print(usage(module))
        return
    status = run_reporting_errors(lambda: module.main(read_options(argv, module.DEFAULTS)))
    if isinstance(status, int) and not isinstance(status, bool):
        sys.exit(status)


def prepare_text(usage_text: str = "", argv: list[str] | None = None) -> None:
    """``scripts/prepare_text.py``: tokenize a corpus for ``data=tokenized_text`` with the data overrides train.py
    takes (``data.task.KEY=VALUE``), so training with the same options reuses the files; ``--help`` prints
    ``usage_text``."""
    from ebt.training.cli import run_reporting_errors  # imports torch

    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(usage_text)
        return
    run_reporting_errors(_prepare_text, argv)


def _prepare_text(overrides: list[str]) -> None:
    from hydra.errors import HydraException

    from ebt.tasks.text_prepare import prepare_task
    from ebt.training.config import compose_train
    from ebt.training.validation import check_config

    try:
        cfg = compose_train(["data=tokenized_text", *overrides])
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(f"{str(e).splitlines()[0]}; overrides are data.task.KEY=VALUE with the keys of "
                          "configs/data/tokenized_text.yaml (see --help)") from None
    check_config(cfg)
    print(prepare_task(OmegaConf.to_container(cfg.data.task, resolve=True), overrides))
