"""Closed-loop evaluation of nav2d policies (predictor, diffusion or EBT; the kind is read from the checkpoint):

    python scripts/policy_eval.py 'runs=[RUN_S0,RUN_S1,RUN_S2]' out=DIR [config=NAME] [episodes=200]
    python scripts/policy_eval.py 'merge=[DIR1,DIR2]' out=ALL doc=docs/ebt_policy.md

Writes success / collision tables (mean and 95 % t-interval over seeds), the settings chosen on val and reported on
test / ood, energy AUROCs and a success-vs-compute curve to ``out``; ``merge`` joins earlier evaluations, ``doc`` writes
the tables into a markdown file's ``<!-- policy_eval:NAME -->`` blocks. ``key=value`` options (``--help`` lists them
with their defaults) and definitions: :mod:`ebt.analysis.task_eval.policy_eval`.
"""

from ebt.commands import options_command

if __name__ == "__main__":
    options_command("ebt.analysis.task_eval.policy_eval")
