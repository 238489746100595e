"""MemoryFormer block vs a dense Transformer block: FLOPs per token, parameter memory and forward time (CPU).

    python scripts/bench_memoryformer.py dims=[512,1024] seq_len=512 reps=10

Options (key=value) and what is measured: ``python scripts/bench_memoryformer.py --help`` and
:mod:`ebt.benchmarks.memoryformer`; results are appended to ``bench_results/memoryformer.csv`` and plotted to
``bench_results/memoryformer.png`` (docs/tokenformer_memoryformer.md).
"""

from ebt.commands import options_command

if __name__ == "__main__":
    options_command("ebt.benchmarks.memoryformer")
