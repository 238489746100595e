"""Benchmark the EBT thinking-step kernels: reference eager vs torch.compile(reference) vs Triton.

    python scripts/bench_kernels.py                  # GPU preset (V 256..128k, D 384/1024, M 2k/8k)
    python scripts/bench_kernels.py preset=cpu       # tiny shapes; default when there is no CUDA device

Options (key=value) and what is measured: ``python scripts/bench_kernels.py --help`` and
:mod:`ebt.benchmarks.kernels`; results are appended to ``bench_results/kernels.csv`` and the speed-up over eager is
plotted to ``bench_results/kernels_speedup.png`` (docs/kernels.md).
"""

from ebt.commands import options_command

if __name__ == "__main__":
    options_command("ebt.benchmarks.kernels")
