"""Sample text from a trained language model: ``python scripts/generate.py ckpt=RUN 'prompt="def main("'``.

``ckpt=`` is a run folder of ``scripts/train.py``, a ``.ckpt`` file or a folder written by ``scripts/export.py``, of a
text task (``data=text`` or a tokenizer task), predictor or EBT. Options (``max_new_tokens``, ``temperature``,
``top_k``, ``seed``; for an EBT ``steps``, ``best_of``, ``energy_tol``; ``verbose=true`` for the energy and steps per
token): ``configs/generate.yaml``; how it samples: :mod:`ebt.analysis.tools.generate`.
"""

from ebt.commands import generate

if __name__ == "__main__":
    generate()
