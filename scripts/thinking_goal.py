"""Does thinking longer help? The goal tests over seeds (longest curve, chosen step count, best-of-N, the EBT against
the predictor and the looped predictor), each a relative change with a bootstrap interval over seeds:

    python scripts/thinking_goal.py 'runs=[RUN0,RUN1,RUN2,RUN3,RUN4]' out=OUT

``key=value`` options (``--help`` lists them with their defaults) and definitions: :mod:`ebt.analysis.thinking.goal`.
"""

from ebt.commands import options_command

if __name__ == "__main__":
    options_command("ebt.analysis.thinking.goal")
