"""Evaluate any checkpoint, predictor or EBT, on any split: ``python scripts/eval.py ckpt=RUN [splits=[val,ood,test]]``.

``ckpt=`` is a run folder of ``scripts/train.py`` (its ``checkpoints/last.ckpt``) or a ``.ckpt`` file;
``+data.KEY=VALUE`` overrides the stored data config (a moved corpus: ``+data.task.path=...``). Prints the task's
metrics and loss per split and writes ``eval.csv`` / ``eval.md`` into the run's ``eval/`` folder. Options:
``configs/eval.yaml``; what is computed: :mod:`ebt.analysis.tools.evaluate`.
"""

from ebt.commands import evaluate

if __name__ == "__main__":
    evaluate()
