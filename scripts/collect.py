"""Collect ablation grids: ``python scripts/collect.py DIR [DIR ...] [--out OUT] [--metrics M ...] [--seed-key seed]``.

Tables (markdown, CSV) and plots of a multirun, mean ± std over seeds; options and outputs: :mod:`ebt.analysis.collect`.
"""

import sys

from ebt.analysis.collect import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
