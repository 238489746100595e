"""This repo's EBT training step timed side by side with the EBT authors' reference implementation, in one process.

    git clone https://github.com/alexiglad/EBT /tmp/ebt_ref && git -C /tmp/ebt_ref checkout 0ad36281
    OMP_NUM_THREADS=1 python scripts/bench_reference.py reference=/tmp/ebt_ref preset=xxs vocab=32000 batch=4

Options (key=value), rows and the known differences: ``python scripts/bench_reference.py --help`` and
:mod:`ebt.benchmarks.reference`; results are appended to ``bench_results/reference.csv`` (docs/ebt_speed.md).
"""

from ebt.commands import options_command

if __name__ == "__main__":
    options_command("ebt.benchmarks.reference")
