"""Tokenize a corpus for ``data=tokenized_text`` ahead of training, with progress bars. Takes the overrides of
``python scripts/train.py data=tokenized_text`` (``data.task.KEY=VALUE``: the keys of configs/data/tokenized_text.yaml),
so training with the same options reuses the files::

    python scripts/prepare_text.py                                    # the Python standard library, BPE of 4096
    python scripts/prepare_text.py data.task.path=~/corpus data.task.glob='*.txt' data.task.vocab_size=8192
    python scripts/prepare_text.py data.task.path=data.jsonl data.task.text_field=content
    python scripts/prepare_text.py data.task.path=~/corpus data.task.tokenizer=tokenizer.json

Prints where the files went (``${EBT_DATA_CACHE:-~/.cache/ebt-alt-arch}/tokenized/<key>/``) and the tokens, bytes and
bytes per token of each split; a re-run reuses valid files. What is written: :mod:`ebt.tasks.text_prepare`.
"""

import sys

from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ebt.errors import ConfigError
from ebt.tasks.text_prepare import prepare_task
from ebt.training.cli import run_reporting_errors
from ebt.training.config import compose_train
from ebt.training.validation import check_config


def main(overrides: list[str]) -> None:
    if any(a in ("-h", "--help") for a in overrides):
        return print(__doc__)
    try:
        cfg = compose_train(["data=tokenized_text", *overrides])
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(f"{str(e).splitlines()[0]}; overrides are data.task.KEY=VALUE with the keys of "
                          "configs/data/tokenized_text.yaml (see --help)") from None
    check_config(cfg)
    print(prepare_task(OmegaConf.to_container(cfg.data.task, resolve=True), overrides))


if __name__ == "__main__":
    run_reporting_errors(main, sys.argv[1:])
