"""TokenFormer progressive scaling: ``python scripts/grow.py ckpt=PATH slots=+N [out=PATH] [seed=0]``.

Appends ``N`` zero-key parameter tokens to every Pattention of a ``scripts/train.py`` checkpoint and writes a
checkpoint to resume from; see :mod:`ebt.analysis.tools.growth`.
"""

import sys

from ebt.analysis.tools.growth import main
from ebt.training.cli import run_reporting_errors

if __name__ == "__main__":
    run_reporting_errors(main, sys.argv[1:])
