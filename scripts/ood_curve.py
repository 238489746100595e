"""Thinking improvement vs OOD gap (the EBT paper's Fig. 6) from think.py's CSVs, one per seed (each with the
predictor's rows, from ``think.py baseline_ckpt=``); mean ± 95 % interval over them:

    python scripts/ood_curve.py 'csvs=[S0/thinking/thinking.csv,S1/thinking/thinking.csv]' out=DIR [train_steps=N]

``key=value`` options (``--help`` lists them with their defaults) and outputs: :mod:`ebt.analysis.thinking.ood_curve`.
"""

from ebt.commands import options_command

if __name__ == "__main__":
    options_command("ebt.analysis.thinking.ood_curve")
