"""Thinking curves over seeds: settings selected on ``select_on`` (default ``val``) and read on every split, mean ± std
over seeds, from the ``think.py`` outputs of one run per seed:

    python scripts/think_seeds.py 'runs=[RUN0,RUN1,RUN2]' out=OUT [metric=cell_acc metric_mode=max]

``key=value`` options (``--help`` lists them with their defaults) and definitions:
:mod:`ebt.analysis.thinking.think_seeds`.
"""

from ebt.commands import options_command

if __name__ == "__main__":
    options_command("ebt.analysis.thinking.think_seeds")
