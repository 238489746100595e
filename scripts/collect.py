"""Collect an ablation grid into tables and plots: one row per job, mean ± std over seeds per configuration.

    python scripts/collect.py dirs=outputs/grids/mixers/<time>_<id>
    python scripts/collect.py 'dirs=[GRID1,GRID2]' 'metrics=[val/acc,val/tok_acc]' out=OUT

``key=value`` options (``--help`` lists them with their defaults), outputs and definitions:
:mod:`ebt.analysis.tools.collect`. Installed, the same command is ``ebt-collect``.
"""

from ebt.commands import options_command

if __name__ == "__main__":
    options_command("ebt.analysis.tools.collect")
