"""Test environment: offline wandb, headless plots, Triton's CPU interpreter (set before kernels import).

The interpreter is on even where there is a GPU (the kernel tests then run on CPU tensors); to test the Triton
kernels on the GPU itself: ``TRITON_INTERPRET=0 python -m pytest tests/test_kernels.py``. Hardware-dependent tests
are gated with ``tests.utils.run_if``; in-process training runs on the CPU (``tests.utils.compose_config``).
"""

import os
import tempfile

os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("HYDRA_FULL_ERROR", "1")
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="inductor-"))
# One thread, here and in the subprocesses tests start: on a 2-core machine two torch threads stall (100x slower
# measured) as soon as anything else is busy, e.g. a CLI subprocess or the two ranks of a DDP test.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)
