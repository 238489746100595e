"""Token-mixer scaling: forward + backward time and peak memory of each mixer versus sequence length.

    python scripts/bench_mixers.py lengths=[256,512,1024,2048] cpu_max_len=2048 reps=3

Options (key=value) and what is measured: ``python scripts/bench_mixers.py --help`` and :mod:`ebt.benchmarks.mixers`;
results are appended to ``bench_results/mixers.csv`` and plotted to ``bench_results/mixers.png``.
"""

from ebt.commands import options_command

if __name__ == "__main__":
    options_command("ebt.benchmarks.mixers")
