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

from ebt.commands import prepare_text

if __name__ == "__main__":
    prepare_text(__doc__)
