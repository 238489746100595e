"""Metric versus thinking compute for a trained EBT: ``python scripts/think.py ckpt=RUN [steps=[...]] ...``.

``ckpt=`` is a run folder of ``scripts/train.py`` (its ``checkpoints/last.ckpt``) or a ``.ckpt`` file;
``+data.KEY=VALUE`` overrides the stored data config (a moved corpus: ``+data.task.path=...``). Writes
``thinking.csv``, ``thinking.md``, ``thinking.png``, ``verifier.csv`` and ``thinking_energy.png`` into the run's
``thinking/`` folder (``out_dir=`` to change),
prints the table, and shows its progress on stderr. See ``configs/think.yaml`` for the options (defaults sized for
about a minute on a 2-core CPU) and ``ebt/analysis/thinking/thinking_eval.py`` for definitions.
"""

from ebt.commands import think

if __name__ == "__main__":
    think()
