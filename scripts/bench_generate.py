"""Generation speed, key/value cache vs re-running the window, predictor and EBT, per prompt length.

    python scripts/bench_generate.py prompts=[16,128,512] window=256 new_tokens=16 steps=[2,4] best_of=[1,4]

Options (key=value) and what is measured: ``python scripts/bench_generate.py --help`` and
:mod:`ebt.benchmarks.generation`; writes ``generation.csv`` and ``generation.png`` to ``out`` (default
``bench_results/generation``; the committed results, ``out=docs/generation``, are shown in ``docs/generation.md``).
"""

from ebt.commands import options_command

if __name__ == "__main__":
    options_command("ebt.benchmarks.generation")
