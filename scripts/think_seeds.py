"""Thinking curves over seeds: ``python scripts/think_seeds.py RUN [RUN ...] --out OUT [--select-on val]``.

RUN is a ``think.py`` output folder (``<run>/thinking``) or the run folder above it, one per seed. Settings are
selected on ``--select-on`` and read on every split; mean ± std over seeds.
Definitions: :mod:`ebt.analysis.thinking.think_seeds`.
"""

import sys

from ebt.analysis.thinking.think_seeds import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
