"""One GPU check, ready to run on a machine with one CUDA GPU (at most 8 minutes): the kernel tests without the
interpreter, the kernel and EBT-step benchmarks, and 1:45 minutes of the default training with ``trainer=gpu``.

    python scripts/gpu_check.py                      # writes gpu_check_results/<time>/ (summary.md, CSVs, logs)
    python scripts/gpu_check.py out=.gpu stages=[kernels,bench_kernels]
    python scripts/gpu_check.py smoke=true           # toy sizes on any device: checks the plumbing

Stages, options (key=value) and outputs: ``python scripts/gpu_check.py --help`` and :mod:`ebt.benchmarks.gpu_check`.
"""

import sys

from ebt.commands import options_command

if __name__ == "__main__":
    argv = sys.argv[1:]
    if argv[:1] == ["--out"] and len(argv) == 2:  # the form written in the GPU machines' setup notes
        argv = [f"out={argv[1]}"]
    options_command("ebt.benchmarks.gpu_check", argv)
