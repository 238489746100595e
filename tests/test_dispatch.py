"""ebt_kernels.dispatch: auto|torch|triton (the name as given), clear errors, and life without triton."""

import logging
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from ebt_kernels import dispatch
from ebt_kernels.candidate_update import candidate_update
from ebt_kernels.dispatch import KernelBackendError, resolve_backend
from ebt_kernels.softmax_embed import softmax_embed
from tests.utils import ROOT


@pytest.fixture
def fresh(monkeypatch):
    """No EBT_KERNELS, no interpreter, no GPU, an empty one-time-log memory (each test adds what it needs)."""
    monkeypatch.delenv("EBT_KERNELS", raising=False)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr(dispatch, "interpreter_on", lambda: False)
    monkeypatch.setattr(dispatch, "gpu_driver_status", lambda: (False, "no CUDA device is available"))
    monkeypatch.setattr(dispatch, "_logged", set())
    return monkeypatch


def test_auto_on_cpu_without_interpreter_picks_torch_and_logs_once(fresh, caplog):
    with caplog.at_level(logging.INFO, logger="ebt_kernels.dispatch"):
        for _ in range(3):
            assert resolve_backend("auto") == "torch"
            assert resolve_backend("auto", torch.device("cpu")) == "torch"
    lines = [r.getMessage() for r in caplog.records if r.name == "ebt_kernels.dispatch"]
    assert len(lines) == 1 and "torch reference" in lines[0] and "no CUDA device" in lines[0]


def test_auto_with_a_usable_gpu_picks_triton_but_not_for_cpu_tensors(fresh):
    fresh.setattr(dispatch, "gpu_driver_status", lambda: (True, ""))
    assert resolve_backend("auto") == "triton"
    assert resolve_backend("auto", "cuda:0") == "triton"
    assert resolve_backend("auto", "cpu") == "torch"


def test_auto_never_picks_the_interpreter(fresh):
    fresh.setattr(dispatch, "interpreter_on", lambda: True)
    assert resolve_backend("auto") == "torch"
    assert resolve_backend("triton", "cpu") == "triton"  # explicit triton: the interpreter counts as usable


def test_triton_without_a_usable_triton_raises(fresh):
    with pytest.raises(KernelBackendError, match="'triton' cannot run here: no CUDA device"):
        resolve_backend("triton")
    fresh.setattr(dispatch, "gpu_driver_status", lambda: (True, ""))
    with pytest.raises(KernelBackendError, match="need CUDA tensors"):
        resolve_backend("triton", "cpu")
    fresh.setattr(dispatch, "triton_importable", lambda: False)
    with pytest.raises(KernelBackendError, match="triton is not installed"):
        resolve_backend("triton", "cuda")
    with pytest.raises(KernelBackendError, match="cannot run here"):
        softmax_embed(torch.randn(2, 8), torch.randn(8, 4), backend="triton")
    assert resolve_backend("torch") == "torch"


def test_the_environment_does_not_override_an_explicit_name_and_bad_names_are_refused(fresh):
    fresh.setenv("EBT_KERNELS", "triton")
    assert resolve_backend("torch") == "torch"  # only the training config's default reads EBT_KERNELS
    y = torch.randn(2, 8)
    torch.testing.assert_close(candidate_update(y, y, 0.5, backend="torch"), 0.5 * y)
    with pytest.raises(ValueError, match="backend 'fast'; use one of auto, torch, triton"):
        resolve_backend("fast")


def test_real_no_gpu_path_and_package_without_triton():
    """In a fresh process: with this machine's real Triton (no GPU, no interpreter) ``triton`` raises before any
    launch; then with ``import triton`` made to fail, the package still imports and the reference works."""
    env = {k: v for k, v in os.environ.items() if k not in {"TRITON_INTERPRET", "EBT_KERNELS"}}
    code = textwrap.dedent("""
        import sys
        import torch
        from ebt_kernels import KernelBackendError, resolve_backend, softmax_embed
        from ebt_kernels.dispatch import triton_importable

        def must_raise(call, text):
            try:
                call()
            except KernelBackendError as exc:
                assert text in str(exc), exc
            else:
                raise AssertionError("backend='triton' must raise here")

        if triton_importable() and not torch.cuda.is_available():
            assert resolve_backend("auto") == "torch"
            must_raise(lambda: resolve_backend("triton"), "no CUDA device")
            must_raise(lambda: softmax_embed(torch.randn(3, 10), torch.randn(10, 4), backend="triton"), "no CUDA")
        for name in [m for m in sys.modules if m.split(".")[0] in {"triton", "ebt_kernels"}]:
            del sys.modules[name]
        sys.modules["triton"] = None  # `import triton` now raises ImportError
        from ebt_kernels import candidate_update, resolve_backend, softmax_embed
        from ebt_kernels import KernelBackendError
        assert resolve_backend("auto") == "torch"
        assert softmax_embed(torch.randn(3, 10), torch.randn(10, 4), backend="auto").shape == (3, 4)
        assert candidate_update(torch.zeros(2, 5), torch.ones(2, 5), 0.5, backend="auto").eq(-0.5).all()
        must_raise(lambda: resolve_backend("triton"), "triton is not installed")
        print("ok")
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**env, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]
