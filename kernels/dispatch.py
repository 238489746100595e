"""Choose between the Triton kernels and their pure-torch references.

``resolve_backend(name, device=None) -> "torch" | "triton"`` for ``name`` in ``auto | torch | triton``.
The name is taken as given: the environment variable ``EBT_KERNELS`` is read only by the training config's default
(``kernels: ${oc.env:EBT_KERNELS,auto}``), so an explicit ``kernels=`` on the command line always wins. The EBT
resolves its backend once per device, not on every op call.

* ``torch``: the pure-torch reference (any device, any dtype, any order of differentiation).
* ``triton``: the Triton kernels. Usable when Triton imports and either the Triton CPU interpreter is on
  (``TRITON_INTERPRET=1``: kernels run on CPU tensors, slowly, for tests) or a CUDA device is present and
  Triton reaches its driver. Otherwise :class:`KernelBackendError` names the reason and the fix.
* ``auto``: Triton on a CUDA device that Triton can drive, else the reference; it logs its choice once.
  ``auto`` never picks the interpreter (it is 100-10,000x slower than torch), so a test session with
  ``TRITON_INTERPRET=1`` keeps models on the reference unless a test asks for ``triton`` explicitly.

Without a GPU, ``import triton`` works but a kernel launch raises ``RuntimeError: 0 active drivers``; the probe
below (``triton.runtime.driver.active.get_current_target()``) detects that before any launch.
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
from typing import Literal

import torch

from ebt_kernels.errors import UserError

CHOICES = ("auto", "torch", "triton")
Backend = Literal["torch", "triton"]

log = logging.getLogger(__name__)
_logged: set[str] = set()


class KernelBackendError(UserError, RuntimeError):
    """A kernel backend that was asked for cannot run here (the message says why and what to do): a
    :class:`~ebt_kernels.errors.UserError`, so the entry points print it as one ``error:`` line."""


@functools.lru_cache(maxsize=1)
def triton_importable() -> bool:
    """Whether ``import triton`` succeeds (cached)."""
    try:
        importlib.import_module("triton")
        importlib.import_module("triton.language")
    except ImportError:
        return False
    return True


def interpreter_on() -> bool:
    """Whether Triton's CPU interpreter is switched on (``TRITON_INTERPRET=1``)."""
    if triton_importable():
        from triton import knobs

        return bool(knobs.runtime.interpret)
    return os.environ.get("TRITON_INTERPRET", "").strip().lower() in {"1", "true", "on", "yes"}


@functools.lru_cache(maxsize=1)
def gpu_driver_status() -> tuple[bool, str]:
    """``(True, "")`` when a CUDA device exists and Triton reaches its driver, else ``(False, reason)`` (cached)."""
    if not torch.cuda.is_available():
        return False, "no CUDA device is available"
    try:
        import triton

        triton.runtime.driver.active.get_current_target()
    except Exception as exc:  # noqa: BLE001 - any driver failure means "not usable"
        return False, f"Triton cannot reach the GPU driver ({type(exc).__name__}: {exc})"
    return True, ""


def triton_status(device: torch.device | str | None = None) -> tuple[bool, str]:
    """Whether the Triton kernels can run on tensors of ``device`` (``None``: the default CUDA device), and why not."""
    if not triton_importable():
        return False, "triton is not installed (pip install triton==3.7.1 on Linux x86_64)"
    if interpreter_on():
        return True, "TRITON_INTERPRET=1 (CPU interpreter)"
    usable, why = gpu_driver_status()
    if usable and device is not None and torch.device(device).type != "cuda":
        return False, f"the tensors are on {torch.device(device)} and the Triton kernels need CUDA tensors"
    return usable, why


def _log_once(message: str) -> None:
    if message not in _logged:
        _logged.add(message)
        log.info(message)


def requested_backend(name: str = "auto") -> str:
    """``name`` validated and lower-cased."""
    choice = str(name).strip().lower()
    if choice not in CHOICES:
        raise ValueError(f"unknown kernels backend {name!r}; use one of {', '.join(CHOICES)}")
    return choice


def resolve_backend(name: str = "auto", device: torch.device | str | None = None) -> Backend:
    """``"torch"`` or ``"triton"`` for a requested ``name`` (``auto|torch|triton``).

    ``device`` is where the op's tensors live (``None``: judge by the machine). Raises
    :class:`KernelBackendError` when ``triton`` is requested and cannot run.
    """
    choice = requested_backend(name)
    if choice == "torch":
        return "torch"
    usable, why = triton_status(device)
    if choice == "triton":
        if not usable:
            raise KernelBackendError(
                f"kernels backend 'triton' cannot run here: {why}; use kernels=torch or kernels=auto, "
                "or run on a CUDA GPU / with TRITON_INTERPRET=1")
        return "triton"
    if usable and not interpreter_on():
        _log_once("kernels: backend 'auto' -> triton (CUDA device with Triton)")
        return "triton"
    reason = "the Triton interpreter is never chosen automatically" if usable else why
    _log_once(f"kernels: backend 'auto' -> torch reference ({reason})")
    return "torch"
