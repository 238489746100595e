"""Benchmarks: what a step costs (time, FLOPs, peak memory), one module per ``scripts/bench_*.py``.

Each benchmark module defines ``DEFAULTS`` and ``main(cfg)`` and is run by its thin script through
:func:`ebt.commands.options_command` (``key=value`` options; ``--help`` prints the module's docstring and defaults):

* ``ebt_step``: one EBT training step versus a predictor step at the same backbone (``scripts/bench_ebt.py``);
* ``reference``: the same step side by side with the EBT authors' reference implementation
  (``scripts/bench_reference.py``); ``reference_checkout`` loads that implementation from a checkout;
* ``kernels``: the thinking-step kernels, eager vs compiled vs Triton (``scripts/bench_kernels.py``);
* ``mixers``: token-mixer scaling with sequence length (``scripts/bench_mixers.py``);
* ``memoryformer``: a MemoryFormer block versus a dense Transformer block (``scripts/bench_memoryformer.py``);
* ``gpu_check``: the one GPU check (kernel tests, the kernel and EBT-step benchmarks, a short training;
  ``scripts/gpu_check.py``).

Shared: ``measure`` (timing, memory peak, FLOPs, the CSV appender and its environment columns; results go to
``bench_results/``); their ``key=value`` options are read by :mod:`ebt.options`. The workload of the step benchmarks is
:class:`ebt.tasks.random_tokens.RandomTokens`.
"""
