"""Collect ablation grids: ``python scripts/collect.py DIR [DIR ...] [--out OUT] [--metrics M ...] [--seed-key seed]``.

Tables (markdown, CSV) and plots of a multirun, mean ± std over seeds; options and outputs:
:mod:`ebt.analysis.tools.collect`.
"""

from ebt.commands import collect

if __name__ == "__main__":
    collect()
