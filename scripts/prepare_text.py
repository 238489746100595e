"""Tokenize a corpus for ``data=tokenized_text`` ahead of training, with progress bars:
``python scripts/prepare_text.py [data.task.KEY=VALUE ...]``.

Takes the same overrides as ``python scripts/train.py data=tokenized_text`` (the keys of
configs/data/tokenized_text.yaml), so training with the same options reuses the files, e.g.::

    python scripts/prepare_text.py                                    # the Python standard library, BPE of 4096
    python scripts/prepare_text.py data.task.path=~/corpus data.task.glob='*.txt' data.task.vocab_size=8192
    python scripts/prepare_text.py data.task.path=data.jsonl data.task.text_field=content
    python scripts/prepare_text.py data.task.path=~/corpus data.task.tokenizer=tokenizer.json

Prints where the files went (``${EBT_DATA_CACHE:-~/.cache/ebt-alt-arch}/tokenized/<key>/``) and the tokens, bytes and
bytes per token of each split. A re-run reuses valid files; a corrupt or stale folder is rebuilt (one warning).
Bad input prints one ``error:`` line and exits 2. What is written: :mod:`ebt.tasks.text_prepare`.
"""

import sys

from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ebt.errors import ConfigError
from ebt.tasks.text_prepare import CorpusOptions, prepare, summary
from ebt.training.cli import run_reporting_errors
from ebt.training.config import compose_train
from ebt.training.validation import check_config

TARGET = "ebt.tasks.tokenized_text.TokenizedText"


def main(argv: list[str]) -> None:
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return
    try:
        cfg = compose_train(["data=tokenized_text", *argv])
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(f"{str(e).splitlines()[0]}; overrides are data.task.KEY=VALUE with the keys of "
                          "configs/data/tokenized_text.yaml (see --help)") from None
    check_config(cfg)
    task = OmegaConf.to_container(cfg.data.task, resolve=True)
    if task.get("_target_") != TARGET:
        raise ConfigError(f"scripts/prepare_text.py prepares data=tokenized_text only, got {task.get('_target_')}; "
                          "drop the data= override")
    prepared = prepare(CorpusOptions.from_config(task), task.get("cache_dir"), progress=True)
    print(summary(prepared))
    print(f"train with: python scripts/train.py data=tokenized_text {' '.join(argv)}".rstrip())


if __name__ == "__main__":
    run_reporting_errors(main, sys.argv[1:])
