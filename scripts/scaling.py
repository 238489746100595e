"""Scaling exponents of a grid's objectives with bootstrap 95 % intervals over seeds, their ratio, tables and plots:

    python scripts/scaling.py dirs=outputs/grids/scaling_params/<time>_<id> x=params
    python scripts/scaling.py dirs=GRID x=flops metric=val/bpb [ratio=ebt/predict] [out=OUT]

``key=value`` options (``--help`` lists them with their defaults; x=params|depth|tokens|flops), outputs and
definitions: :mod:`ebt.analysis.scaling.report`; the grids and how to read the exponents: docs/scaling.md.
"""

from ebt.commands import options_command

if __name__ == "__main__":
    options_command("ebt.analysis.scaling.report")
