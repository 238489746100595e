"""Cost of one EBT training step versus a predictor step at the same backbone (time, FLOPs, peak memory).

    python scripts/bench_ebt.py                                    # GPU preset (d=384, 6 layers, T=256, V 256/32k)
    OMP_NUM_THREADS=1 python scripts/bench_ebt.py preset=cpu reps=5  # the CPU preset (default without CUDA)

Options (key=value), rows and columns: ``python scripts/bench_ebt.py --help`` and :mod:`ebt.benchmarks.ebt_step`;
results are appended to ``bench_results/ebt.csv`` (docs/ebt_speed.md).
"""

from ebt.commands import options_command

if __name__ == "__main__":
    options_command("ebt.benchmarks.ebt_step")
