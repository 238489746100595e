"""TokenFormer progressive scaling: ``python scripts/grow.py ckpt=PATH slots=+N [out=PATH] [seed=0]``.

Appends ``N`` zero-key parameter tokens to every Pattention of a ``scripts/train.py`` checkpoint and writes a checkpoint
to resume from; ``key=value`` options (``--help`` lists them) and what is kept: :mod:`ebt.analysis.tools.growth`.
"""

from ebt.commands import options_command

if __name__ == "__main__":
    options_command("ebt.analysis.tools.growth")
