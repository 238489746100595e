"""Fused ops for the EBT thinking step: Triton kernels, each with a pure-torch reference next to it.

Only torch and (optionally) triton are imported here (tests/test_layering.py enforces it); the package imports
and the ``torch`` backend works without triton installed. See docs/kernels.md. :mod:`ebt_kernels.errors` holds the
project's one user-error base class (imported by every layer).

* :func:`softmax_embed` -- ``softmax(y) @ W`` without materialising the probabilities (online softmax).
* :func:`candidate_update` -- the deterministic step ``y - alpha * clamp(g)`` in one pass (the EBT adds Langevin noise
  itself, before the energy).
* :func:`resolve_backend` -- ``auto | torch | triton`` -> ``torch | triton``.
"""

from ebt_kernels.candidate_update import candidate_update, candidate_update_reference
from ebt_kernels.dispatch import KernelBackendError, resolve_backend, triton_status
from ebt_kernels.softmax_embed import softmax_embed, softmax_embed_reference

__all__ = [
    "KernelBackendError",
    "candidate_update",
    "candidate_update_reference",
    "resolve_backend",
    "softmax_embed",
    "softmax_embed_reference",
    "triton_status",
]
