"""Looped transformer backbone: AlgoFormer (Gao et al., 2024) with the training tricks of Yang et al. (ICLR 2024).

Reference code: https://github.com/Leiay/looped_transformer at commit 6b3bdb2295625092cbe7f868ca1742ab28d4cd5b
(``scripts/models.py``, ``TransformerModelLooped``) for Yang et al.; AlgoFormer has no public code.

Papers: "On the Expressive Power of a Variant of the Looped Transformer" (Gao, Zheng, Zhang, Li, Lin, Wang, 2024;
AlgoFormer) and "Looped Transformers are Better at Learning Learning Algorithms" (Yang, Lee, Nowak,
Papailiopoulos, ICLR 2024).

Equations implemented (every block is a pre-norm MetaFormer block from ``alt_arch.block``)::

    p   = Pre(x)                               # pre_depth blocks (identity when pre_depth = 0)
    h_0 = 0
    h_t = Loop(h_{t-1} + p),  t = 1..T         # loop_depth blocks, the SAME weights every iteration;
                                               # "+ p" is Yang et al.'s input injection
    y   = Norm(Post(h_T))                      # post_depth blocks, then the final norm

``T = loops`` in training mode and ``T = eval_loops`` in evaluation mode (``module.training`` decides), so a
model can be trained with few iterations and evaluated with more; ``eval_loops`` is a settable attribute
(``model.backbone.eval_loops = 12``) for sweeps such as ``scripts/think.py``.

Truncated backpropagation (Yang et al., Sec. 4): in training mode only the last ``W = train_window`` iterations
are differentiated; iterations ``1..T-W`` run under ``torch.no_grad`` (``W = None``: all of them). Inside
:func:`alt_arch.utils.exact_input_gradients` (the EBT thinks there) the frozen iterations run on *detached loop
parameters* instead: the loop's parameters still get no gradient from them, but the gradient with respect to the
backbone's input (the candidate: the EBT's ``dE/dy``) stays exact, and so does everything upstream of the input
injection (pre blocks, encoder). The context stream of the two-stream mode does not depend on the candidate and keeps
``torch.no_grad``.

Loop-count curriculum (optional): with ``curriculum_start = T0`` and ``curriculum_steps = S`` the training
loop count is ``T0 + floor((loops - T0) * min(1, step / S))``. ``step`` is the ``progress`` buffer (saved in
checkpoints): every training-mode ``forward`` / ``forward_context`` adds one to it, and ``set_progress(step)``
overwrites it (a trainer that calls ``set_progress(global_step)`` before each step makes it exact).

Activation checkpointing (``checkpoint=True``): as in :mod:`alt_arch.backbones.stack`, every block (pre, each loop
iteration's, post; both streams of the two-stream mode) runs under non-reentrant ``torch.utils.checkpoint`` while
training with gradients enabled. A truncated iteration inside ``exact_input_gradients`` is checkpointed as one unit
(its loop blocks together) around the call on detached parameters, so its recomputation uses them too.

Initialisation: the GPT-2 scheme of ``alt_arch.backbones.stack`` (reused, not copied) with the *unrolled*
depth ``pre_depth + loop_depth * loops + post_depth`` in the ``1/sqrt(2 L)`` residual scaling.

Deviations from the papers:

* Yang et al. average the loss over the read-outs of the last ``W`` iterations; a backbone returns one tensor,
  so here the loss is on the last iteration only and ``W`` only truncates the gradient.
  ``forward_iterates`` returns the per-iteration outputs for an objective that wants the averaged loss.
* AlgoFormer's pre/loop/post transformers are standard (post-norm, GPT-2) transformers; here they are the
  repository's pre-norm MetaFormer blocks (any mixer / MLP / linear part), with one final norm.
* Both papers read out a linear map of the last hidden state; the read-out head belongs to the objective.
"""

from contextlib import nullcontext

import torch
from torch import nn

from alt_arch.backbones.stack import context_pass, init_linear, run_block
from alt_arch.block import MetaFormerBlock, blocks_extend_context
from alt_arch.errors import PartOptionError
from alt_arch.linears.dense import dense
from alt_arch.mlp import SwiGLU
from alt_arch.norms import RMSNorm
from alt_arch.utils import input_gradients_exact, matmul_params


class LoopBlocks(nn.ModuleList):
    """The looped blocks; calling it runs them once (``caches``: as the candidate stream of the two-stream mode)."""

    def forward(self, x: torch.Tensor, caches: list | None = None, checkpoint: bool = False) -> torch.Tensor:
        if caches is None:
            return Looped._run(self, x, checkpoint)
        return Looped._candidates(self, x, caches, checkpoint)


def _check_positive(name: str, value: int | None, minimum: int, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, int) or value < minimum:
        raise PartOptionError(f"looped backbone: {name} must be an integer >= {minimum}, got {value!r}")


class Looped(nn.Module):
    def __init__(
        self,
        dim: int,
        *,
        causal: bool,
        mixer,
        mlp=SwiGLU,
        linear=dense,
        spatial_shape: tuple[int, ...] | None = None,
        pre_depth: int = 1,
        loop_depth: int = 1,
        post_depth: int = 1,
        loops: int = 4,
        eval_loops: int | None = None,
        train_window: int | None = None,
        curriculum_start: int | None = None,
        curriculum_steps: int = 0,
        norm=RMSNorm,
        init_std: float = 0.02,
        checkpoint: bool = False,
    ) -> None:
        super().__init__()
        _check_positive("pre_depth", pre_depth, 0)
        _check_positive("loop_depth", loop_depth, 1)
        _check_positive("post_depth", post_depth, 0)
        _check_positive("loops", loops, 1)
        _check_positive("train_window", train_window, 1, allow_none=True)
        _check_positive("curriculum_start", curriculum_start, 1, allow_none=True)
        _check_positive("curriculum_steps", curriculum_steps, 0)
        if curriculum_start is not None and (curriculum_start > loops or curriculum_steps < 1):
            raise PartOptionError(f"looped backbone: curriculum_start ({curriculum_start}) must be <= loops ({loops}) "
                                  f"and curriculum_steps ({curriculum_steps}) >= 1; or set curriculum_start=null")
        self.dim = self.out_dim = dim
        self.causal = causal
        self.loops = loops
        self.eval_loops = eval_loops  # validated by the property setter
        self.train_window = train_window
        self.curriculum_start, self.curriculum_steps = curriculum_start, curriculum_steps
        self.checkpoint = checkpoint  # activation checkpointing per block while training (module docstring)

        def blocks(n: int) -> nn.ModuleList:
            return nn.ModuleList(
                MetaFormerBlock(dim, mixer=mixer(dim, causal=causal, linear=linear, spatial_shape=spatial_shape),
                                mlp=mlp(dim, linear=linear), norm=norm)
                for _ in range(n)
            )

        self.pre, self.post = blocks(pre_depth), blocks(post_depth)
        self.loop = LoopBlocks(blocks(loop_depth))
        self.norm = norm(dim)
        self.register_buffer("progress", torch.zeros((), dtype=torch.long))
        init_linear(self, init_std, pre_depth + loop_depth * loops + post_depth)

    # ----- loop counts -------------------------------------------------------------------------------------------
    @property
    def eval_loops(self) -> int:
        """Iterations in evaluation mode (defaults to ``loops``); assign to change it, ``None`` resets it."""
        return self._eval_loops if self._eval_loops is not None else self.loops

    @eval_loops.setter
    def eval_loops(self, value: int | None) -> None:
        _check_positive("eval_loops", value, 1, allow_none=True)
        self._eval_loops = value

    def set_progress(self, step: int) -> None:
        """Tell the loop-count curriculum the current training step."""
        self.progress.fill_(int(step))

    def train_loops(self) -> int:
        """Iterations in training mode at the current curriculum step."""
        if self.curriculum_start is None:
            return self.loops
        frac = min(1.0, int(self.progress) / self.curriculum_steps)
        return self.curriculum_start + int((self.loops - self.curriculum_start) * frac)

    @staticmethod
    def upgrade_options(options: dict) -> dict:
        """The stored options of an older checkpoint: ``checkpoint`` (added since) is off, as it trained."""
        return {"checkpoint": False, **options}

    def checkpointing(self) -> bool:
        """Whether blocks run checkpointed now: ``checkpoint`` set, training mode, gradients enabled."""
        return self.checkpoint and self.training and torch.is_grad_enabled()

    def current_loops(self) -> int:
        return self.train_loops() if self.training else self.eval_loops

    def _schedule(self) -> tuple[int, int]:
        """(iterations, of which the first ``n_frozen`` run without gradient); advances the curriculum counter."""
        loops = self.current_loops()
        if not self.training:
            return loops, 0
        self.progress += 1
        window = loops if self.train_window is None else min(self.train_window, loops)
        return loops, loops - window

    # ----- forward -----------------------------------------------------------------------------------------------
    def _iterate(self, x: torch.Tensor, frozen: bool, caches: list | None = None) -> torch.Tensor:
        """One pass of the loop blocks; ``frozen``: a truncated iteration (no gradient to the loop's parameters)."""
        if not frozen:
            return self.loop(x, caches, self.checkpointing())
        if not input_gradients_exact():
            with torch.no_grad():
                return self.loop(x, caches)
        detached = {name: p.detach() for name, p in self.loop.named_parameters()}

        def frozen_pass(h: torch.Tensor) -> torch.Tensor:
            return torch.func.functional_call(self.loop, detached, (h, caches))

        return run_block(self.loop, frozen_pass, x, checkpoint=self.checkpointing())

    @staticmethod
    def _run(blocks: nn.ModuleList, x: torch.Tensor, checkpoint: bool = False) -> torch.Tensor:
        for block in blocks:
            x = run_block(block, block, x, checkpoint=checkpoint)
        return x

    def forward_iterates(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``Norm(Post(h_t))`` for every differentiated iteration ``t`` (the last one is ``forward(x)``)."""
        loops, n_frozen = self._schedule()
        ckpt = self.checkpointing()
        p = self._run(self.pre, x, ckpt)  # (B, N, C)
        h = torch.zeros_like(p)
        outputs = []
        for t in range(loops):
            h = self._iterate(h + p, t < n_frozen)  # (B, N, C), input injection
            if t >= n_frozen:
                outputs.append(h)
        return [self.norm(self._run(self.post, h, ckpt)) for h in outputs]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        loops, n_frozen = self._schedule()
        ckpt = self.checkpointing()
        p = self._run(self.pre, x, ckpt)  # (B, N, C)
        h = torch.zeros_like(p)
        for t in range(loops):
            h = self._iterate(h + p, t < n_frozen)
        return self.norm(self._run(self.post, h, ckpt))

    # ----- two-stream autoregressive EBT (see alt_arch/mixers/attention.py) --------------------------------------
    @property
    def extends_context(self) -> bool:
        """Whether :meth:`forward_context` takes a cache of earlier positions (every mixer has ``extends_context``)."""
        return blocks_extend_context(self)

    @staticmethod
    def _candidates(blocks: nn.ModuleList, y: torch.Tensor, caches: list, checkpoint: bool = False) -> torch.Tensor:
        for block, cache in zip(blocks, caches, strict=True):
            y = run_block(block, block.forward_candidates, y, cache, checkpoint=checkpoint)
        return y

    def forward_context(self, x: torch.Tensor, past: tuple | None = None):
        """Context stream: output and the caches of every pre block, every loop iteration and every post block.
        ``past``: those caches of earlier positions (:attr:`extends_context`; evaluation: the loop count must not
        change in between); ``x`` holds the rows after them."""
        loops, n_frozen = self._schedule()
        ckpt = self.checkpointing()
        past_pre, past_loops, past_post = (None, [None] * loops, None) if past is None else past[:3]
        if len(past_loops) != loops:
            raise ValueError(f"the cache holds {len(past_loops)} loop iterations, the backbone runs {loops}; "
                             "build the cache again")
        p, pre_caches = context_pass(self.pre, x, ckpt, past_pre)
        h, loop_caches = torch.zeros_like(p), []
        for t in range(loops):
            with torch.no_grad() if t < n_frozen else nullcontext():
                h, caches = context_pass(self.loop, h + p, ckpt and t >= n_frozen, past_loops[t])
            loop_caches.append(caches)
        out, post_caches = context_pass(self.post, h, ckpt, past_post)
        return self.norm(out), (pre_caches, loop_caches, post_caches, n_frozen)

    def forward_candidates(self, y: torch.Tensor, caches) -> torch.Tensor:
        """Candidate stream with the same recurrence; iteration ``t`` attends to the context of iteration ``t``."""
        pre_caches, loop_caches, post_caches, n_frozen = caches
        ckpt = self.checkpointing()
        p = self._candidates(self.pre, y, pre_caches, ckpt)
        h = torch.zeros_like(p)
        for t, step_caches in enumerate(loop_caches):
            h = self._iterate(h + p, t < n_frozen, step_caches)
        return self.norm(self._candidates(self.post, h, post_caches, ckpt))

    # ----- cost ---------------------------------------------------------------------------------------------------
    def flops_per_token(self, seq_len: int) -> float:
        """Extra forward FLOPs of iterations 2..T (``forward_flops_per_token`` counts shared weights once)."""
        per_iteration = 2 * matmul_params(self.loop)
        for m in self.loop.modules():
            extra = getattr(m, "flops_per_token", None)
            if callable(extra):
                per_iteration += extra(seq_len)
        return (self.current_loops() - 1) * per_iteration
