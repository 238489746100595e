"""A checkpoint as a shareable folder: ``python scripts/export.py ckpt=RUN out=FOLDER``.

Writes ``model.safetensors``, ``config.yaml`` and ``export.json``; the folder loads as ``ckpt=`` of ``generate.py``,
``eval.py`` and ``think.py`` and as ``init_from=`` of ``train.py``. Options: ``configs/export.yaml``; the format:
:mod:`ebt.training.export_format`.
"""

from ebt.commands import export

if __name__ == "__main__":
    export()
