"""A stack of pre-norm MetaFormer blocks with a final norm (Transformer++ with the default parts).

Initialisation follows GPT-2 / nanoGPT: every ``nn.Linear`` ~ N(0, 0.02), residual output projections
(``out``, ``down``) scaled by ``1/sqrt(2 L)``. Parts that define their own initialisation (e.g. TokenFormer
Pattention) are left alone because only ``nn.Linear`` modules are touched.

Activation checkpointing (``checkpoint=True``, ``model.backbone.checkpoint=true``): while training with gradients
enabled, each block's forward (and the EBT's ``forward_context`` / ``forward_candidates``) runs under
``torch.utils.checkpoint.checkpoint(..., use_reentrant=False)``: only the block's inputs are kept and its
activations are recomputed in the backward. The non-reentrant variant supports ``torch.autograd.grad(...,
create_graph=True)``, so the EBT's second-order training gradients are the same as without it (tests). A block is
recomputed with the attention backends of its forward and does not record its auxiliary losses a second time
(:class:`_Recomputation`).
"""

import math
from contextlib import nullcontext

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.checkpoint import checkpoint as torch_checkpoint

from alt_arch.block import MetaFormerBlock, blocks_extend_context
from alt_arch.errors import PartOptionError
from alt_arch.linears.dense import dense
from alt_arch.mlp import SwiGLU
from alt_arch.norms import RMSNorm

RESIDUAL_PROJECTIONS = ("out", "down")


def init_linear(model: nn.Module, std: float, n_layers: int) -> None:
    """GPT-2 init of every ``nn.Linear``; residual projections (``out``, ``down``) scaled by ``1/sqrt(2 L)``."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            scale = 1 / math.sqrt(2 * n_layers) if name.rsplit(".", 1)[-1] in RESIDUAL_PROJECTIONS else 1.0
            nn.init.normal_(module.weight, std=std * scale)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


SDPA_FLAGS = {SDPBackend.FLASH_ATTENTION: torch.backends.cuda.flash_sdp_enabled,
              SDPBackend.EFFICIENT_ATTENTION: torch.backends.cuda.mem_efficient_sdp_enabled,
              SDPBackend.MATH: torch.backends.cuda.math_sdp_enabled,
              SDPBackend.CUDNN_ATTENTION: torch.backends.cuda.cudnn_sdp_enabled}


class _Recomputation:
    """The context of a checkpointed block's recomputation (re-enterable: a block is recomputed once per backward
    pass, and the EBT runs one per thinking step before the loss's).

    * the attention backends of the forward (``sdpa_kernel``): the EBT thinks under the math backend (fused kernels
      have no double backward) and calls the loss's backward outside it; a recomputation with another kernel would
      save other tensors;
    * the auxiliary-loss record (:func:`alt_arch.utils.record_aux`) of the block's parts is restored on exit, so a
      recomputation does not count as another forward pass.
    """

    AUX = ("aux_losses", "aux_metrics", "aux_passes")

    def __init__(self, block: nn.Module) -> None:
        self.block, self.backends = block, [b for b, enabled in SDPA_FLAGS.items() if enabled()]
        self.saved, self.kernel = [], None

    def __enter__(self) -> None:
        self.saved = [(m, {n: list(v) if n == "aux_passes" else v for n in self.AUX
                           if (v := getattr(m, n, None)) is not None}) for m in self.block.modules()]
        self.kernel = sdpa_kernel(self.backends)
        self.kernel.__enter__()

    def __exit__(self, *exc) -> None:
        self.kernel.__exit__(*exc)
        for m, attrs in self.saved:
            for name in self.AUX:
                if name in attrs:
                    setattr(m, name, attrs[name])
                elif hasattr(m, name):
                    delattr(m, name)
        self.saved, self.kernel = [], None


def run_block(block: nn.Module, fn, *args, checkpoint: bool):
    """``fn(*args)`` (a method of ``block``, or a function that calls it), under non-reentrant activation
    checkpointing when ``checkpoint`` (the caller decides: training with gradients enabled)."""
    if not checkpoint:
        return fn(*args)
    return torch_checkpoint(fn, *args, use_reentrant=False,
                            context_fn=lambda: (nullcontext(), _Recomputation(block)))


def context_pass(blocks: nn.ModuleList, x: torch.Tensor, checkpoint: bool = False, past: list | None = None
                 ) -> tuple[torch.Tensor, list]:
    """``blocks``' context stream over ``x`` (after the per-block caches ``past``, None: none): the output and one
    cache per block."""
    caches = []
    for block, cached in zip(blocks, past or [None] * len(blocks), strict=True):
        x, cache = run_block(block, block.forward_context, x, cached, checkpoint=checkpoint)
        caches.append(cache)
    return x, caches


class Stack(nn.Module):
    def __init__(
        self,
        dim: int,
        *,
        causal: bool,
        mixer,
        linear=dense,
        mlp=SwiGLU,
        n_layers: int = 2,
        norm=RMSNorm,
        init_std: float = 0.02,
        spatial_shape: tuple[int, ...] | None = None,
        checkpoint: bool = False,
    ) -> None:
        super().__init__()
        if n_layers < 1:
            raise PartOptionError(f"backbone: n_layers must be >= 1, got {n_layers}")
        self.dim = self.out_dim = dim
        self.causal = causal
        self.checkpoint = checkpoint  # activation checkpointing per block while training (module docstring)
        self.blocks = nn.ModuleList(
            MetaFormerBlock(
                dim,
                mixer=mixer(dim, causal=causal, linear=linear, spatial_shape=spatial_shape),
                mlp=mlp(dim, linear=linear),
                norm=norm,
            )
            for _ in range(n_layers)
        )
        self.norm = norm(dim)
        init_linear(self, init_std, n_layers)

    @staticmethod
    def upgrade_options(options: dict) -> dict:
        """The stored options of an older checkpoint: ``checkpoint`` (added since) is off, as it trained."""
        return {"checkpoint": False, **options}

    def checkpointing(self) -> bool:
        """Whether blocks run checkpointed now: ``checkpoint`` set, training mode, gradients enabled."""
        return self.checkpoint and self.training and torch.is_grad_enabled()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ckpt = self.checkpointing()
        for block in self.blocks:
            x = run_block(block, block, x, checkpoint=ckpt)
        return self.norm(x)

    @property
    def extends_context(self) -> bool:
        """Whether :meth:`forward_context` takes a cache of earlier positions (every mixer has ``extends_context``)."""
        return blocks_extend_context(self)

    def forward_context(self, x: torch.Tensor, past: list | None = None):
        """Context stream of the two-stream AR EBT (and of cached generation): output and one key/value cache per
        layer. ``past``: the caches of earlier positions (:attr:`extends_context`); ``x`` holds the rows after them."""
        x, caches = context_pass(self.blocks, x, self.checkpointing(), past)
        return self.norm(x), caches

    def forward_candidates(self, y: torch.Tensor, caches) -> torch.Tensor:
        """Candidate stream: each row attends to its own context (via ``caches``) and itself."""
        ckpt = self.checkpointing()
        for block, cache in zip(self.blocks, caches, strict=True):
            y = run_block(block, block.forward_candidates, y, cache, checkpoint=ckpt)
        return self.norm(y)
