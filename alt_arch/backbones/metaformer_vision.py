"""Hierarchical MetaFormer / PoolFormer ("MetaFormer Is Actually What You Need for Vision", Yu et al., CVPR 2022).

Reference code ("the authors' reference code" below): https://github.com/sail-sg/poolformer at commit
a075575b8b3dc3c76ecc5c49985d156167372bfa (``models/poolformer.py``, ``models/metaformer.py``).

Architecture (Fig. 2 and Table 1 of the paper; details as in the authors' reference code):

* stem: ``Conv2d(in, w_1, 7, stride 4, padding 2)`` (patch embedding, no norm);
* four stages of blocks at widths ``w_1..w_4``, with ``Conv2d(w_i, w_{i+1}, 3, stride 2, padding 1)``
  downsampling between stages (no norm);
* each block (Eq. 1-3 with layer scale and stochastic depth)::

      x = x + DropPath(ls_1 * TokenMixer(GN(x)))
      x = x + DropPath(ls_2 * fc_2(GELU(fc_1(GN(x)))))

  with ``GN`` a GroupNorm with one group (normalises over channels *and* positions, per-channel affine),
  ``fc_1 / fc_2`` 1x1 convolutions ``w -> 4w -> w`` (init: truncated normal std 0.02, zero bias),
  ``ls_1, ls_2`` per-channel layer scales initialised to 1e-5 (S12, S24) or 1e-6 (S36, M36, M48), and drop
  path rates rising linearly from 0 (first block) to ``drop_path`` (last block);
* head: ``GN`` -> mean over positions -> ``Linear`` (init: truncated normal std 0.02, zero bias).

Variants: S12 [2,2,6,2] x [64,128,320,512]; S24 [4,4,12,4]; S36 [6,6,18,6]; M36 [6,6,18,6] x
[96,192,384,768]; M48 [8,8,24,8] x [96,192,384,768]. The paper's training recipe uses drop path rates 0.1,
0.1, 0.2, 0.3, 0.4 respectively; ``drop_path=None`` selects them.

Under the backbone contract the model maps tokens ``(B, N, dim)`` with ``N = H * W`` (``spatial_shape``) to
``(B, N', out_dim)``: ``out_dim`` = last stage width, ``N'`` = last stage's ``H' * W'``, ending with the head's
GN. The objective's input encoder has already mapped pixel features to ``dim`` channels, so the stem takes
``dim`` input channels; the objective's mean over tokens and linear head complete the paper's head.
:func:`poolformer` builds the paper's full image classifier (pixels in, logits out).

Deviations / additions:

* the token mixer is the ``mixer`` factory (default :class:`~alt_arch.mixers.pool.Pool`, the paper's), built
  per block with the stage's ``spatial_shape``, so e.g. attention also works (the paper's "MetaFormer" with
  other mixers). The channel MLP is the ``mlp`` factory of the contract, built per block at the stage's width;
  its default (``model/mlp=conv`` in the backbone's config, and ``mlp=None`` here) is the paper's 1x1-conv MLP
  :class:`ConvMLP`. The ``linear`` factory reaches the mixer and any MLP that takes one (the paper's MLP keeps
  its biased ``nn.Linear`` layers with a dense ``linear``). Configs stored before the MLP was pluggable carry
  ``mlp_ratio``: they ran (and rebuild) the paper's MLP at that ratio, whatever their ``mlp`` says.
* the 1x1 convolutions run as ``nn.Linear`` over the channel axis of ``(B, N, C)`` tokens: the same function,
  parameters and initialisation, without reshaping between the mixer and the MLP.
* stem and downsampling kernel/stride/padding, ``depths`` and ``widths`` can be overridden so tiny variants fit
  8x8 images (e.g. ``stem_kernel=3, stem_stride=1, stem_padding=1``).
"""

from functools import partial

import torch
from einops import rearrange
from torch import nn

from alt_arch.errors import MixerCapabilityError, PartOptionError
from alt_arch.linears.dense import dense
from alt_arch.mixers.pool import Pool

# variant: (depths, widths, layer scale init, drop path rate of the paper's training recipe)
VARIANTS: dict[str, tuple[tuple[int, ...], tuple[int, ...], float, float]] = {
    "s12": ((2, 2, 6, 2), (64, 128, 320, 512), 1e-5, 0.1),
    "s24": ((4, 4, 12, 4), (64, 128, 320, 512), 1e-5, 0.1),
    "s36": ((6, 6, 18, 6), (64, 128, 320, 512), 1e-6, 0.2),
    "m36": ((6, 6, 18, 6), (96, 192, 384, 768), 1e-6, 0.3),
    "m48": ((8, 8, 24, 8), (96, 192, 384, 768), 1e-6, 0.4),
}


class TokenGroupNorm(nn.GroupNorm):
    """GroupNorm with one group on ``(B, N, C)`` tokens: statistics over all positions and channels."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__(1, dim, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rearrange(super().forward(rearrange(x, "b n c -> b c n")), "b c n -> b n c")


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch of a sample with probability ``p`` (training only)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty(x.shape[0], *([1] * (x.ndim - 1))).bernoulli_(keep)  # (B, 1, 1)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p:.3f}"


class ConvMLP(nn.Module):
    """The paper's channel MLP: 1x1 conv ``dim -> ratio*dim``, GELU, 1x1 conv back (as Linear on tokens; biases,
    truncated-normal init). ``linear``: another linear part (e.g. Pattention) replaces the two layers as built."""

    def __init__(self, dim: int, *, linear=dense, hidden_ratio: float = 4.0) -> None:
        super().__init__()
        hidden = int(dim * hidden_ratio)
        paper = linear is dense
        self.fc1 = nn.Linear(dim, hidden) if paper else linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim) if paper else linear(hidden, dim)
        for fc in (self.fc1, self.fc2) if paper else ():
            nn.init.trunc_normal_(fc.weight, std=0.02)
            nn.init.zeros_(fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class PoolFormerBlock(nn.Module):
    def __init__(self, dim: int, *, mixer: nn.Module, mlp: nn.Module, layer_scale_init: float,
                 drop_path: float) -> None:
        super().__init__()
        self.norm1 = TokenGroupNorm(dim)
        self.mixer = mixer
        self.norm2 = TokenGroupNorm(dim)
        self.mlp = mlp
        self.ls1 = nn.Parameter(torch.full((dim,), layer_scale_init))
        self.ls2 = nn.Parameter(torch.full((dim,), layer_scale_init))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, N, C)
        x = x + self.drop_path(self.ls1 * self.mixer(self.norm1(x)))
        return x + self.drop_path(self.ls2 * self.mlp(self.norm2(x)))


class ConvEmbed(nn.Module):
    """A strided convolution on the token grid (stem or downsampling): ``(B, H*W, C)`` -> ``(B, H'*W', C')``."""

    def __init__(self, d_in: int, d_out: int, *, kernel: int, stride: int, padding: int,
                 grid: tuple[int, int]) -> None:
        super().__init__()
        self.conv = nn.Conv2d(d_in, d_out, kernel, stride=stride, padding=padding)
        self.grid = grid
        self.out_grid = tuple((s + 2 * padding - kernel) // stride + 1 for s in grid)
        if min(self.out_grid) < 1:
            raise PartOptionError(f"metaformer_vision: a {kernel}x{kernel} stride-{stride} conv with padding {padding} "
                                  f"cannot map the {grid} grid; lower model.backbone.stem_stride or use fewer stages")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = self.grid
        y = self.conv(rearrange(x, "b (h w) c -> b c h w", h=h, w=w))  # (B, C', H', W')
        return rearrange(y, "b c h w -> b (h w) c")


class MetaFormerVision(nn.Module):
    def __init__(
        self,
        dim: int,
        *,
        causal: bool,
        mixer=Pool,
        mlp=None,  # the channel MLP factory; None: the paper's (ConvMLP)
        linear=dense,
        spatial_shape: tuple[int, ...] | None = None,
        variant: str = "s12",
        depths: list[int] | tuple[int, ...] | None = None,
        widths: list[int] | tuple[int, ...] | None = None,
        mlp_ratio: float | None = None,  # configs stored before model/mlp was honoured: the paper's MLP at this ratio
        layer_scale_init: float | None = None,
        drop_path: float | None = None,
        stem_kernel: int = 7,
        stem_stride: int = 4,
        stem_padding: int = 2,
        down_kernel: int = 3,
        down_stride: int = 2,
        down_padding: int = 1,
    ) -> None:
        super().__init__()
        if causal:
            raise MixerCapabilityError("metaformer_vision is a non-causal image backbone; use an image task "
                                       "(data=digits, mnist, cifar10) or model/backbone=stack for sequences")
        if spatial_shape is None or len(spatial_shape) != 2:
            raise MixerCapabilityError(f"metaformer_vision needs a 2-D token grid (H, W), got spatial_shape="
                                       f"{spatial_shape}; use an image task (data=digits, mnist, cifar10)")
        if variant not in VARIANTS:
            raise PartOptionError(f"metaformer_vision: unknown variant {variant!r}; choose one of {sorted(VARIANTS)}")
        v_depths, v_widths, v_scale, v_drop = VARIANTS[variant]
        depths = tuple(depths if depths is not None else v_depths)
        widths = tuple(widths if widths is not None else v_widths)
        if len(depths) != len(widths) or not depths or min(depths) < 1:
            raise PartOptionError(f"metaformer_vision: depths {depths} and widths {widths} need the same non-zero "
                                  "number of stages and every depth >= 1")
        layer_scale_init = v_scale if layer_scale_init is None else layer_scale_init
        drop_path = v_drop if drop_path is None else drop_path
        self.dim, self.out_dim, self.depths, self.widths = dim, widths[-1], depths, widths
        if mlp is None or mlp_ratio is not None:
            mlp = partial(ConvMLP, hidden_ratio=4.0 if mlp_ratio is None else mlp_ratio)

        total = sum(depths)
        rates = [drop_path * i / max(total - 1, 1) for i in range(total)]  # linear rise 0 -> drop_path
        grid = (int(spatial_shape[0]), int(spatial_shape[1]))
        self.stem = ConvEmbed(dim, widths[0], kernel=stem_kernel, stride=stem_stride, padding=stem_padding,
                              grid=grid)
        grid = self.stem.out_grid
        self.stages, self.downsamples, self.grids = nn.ModuleList(), nn.ModuleList(), []
        for i, (depth, width) in enumerate(zip(depths, widths, strict=True)):
            if i > 0:
                down = ConvEmbed(widths[i - 1], width, kernel=down_kernel, stride=down_stride,
                                 padding=down_padding, grid=grid)
                self.downsamples.append(down)
                grid = down.out_grid
            self.grids.append(grid)
            first = sum(depths[:i])
            self.stages.append(nn.Sequential(*(
                PoolFormerBlock(width, mixer=mixer(width, causal=False, linear=linear, spatial_shape=grid),
                                mlp=mlp(width, linear=linear), layer_scale_init=layer_scale_init,
                                drop_path=rates[first + j])
                for j in range(depth)
            )))
        self.norm = TokenGroupNorm(widths[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, H*W, dim) -> (B, H'*W', out_dim)
        x = self.stem(x)
        for i, stage in enumerate(self.stages):
            if i > 0:
                x = self.downsamples[i - 1](x)
            x = stage(x)
        return self.norm(x)


class PoolFormer(nn.Module):
    """The paper's full image classifier: ``head(mean_positions(MetaFormerVision(pixels)))``."""

    def __init__(self, variant: str = "s12", *, in_chans: int = 3, num_classes: int = 1000,
                 img_size: int | tuple[int, int] = 224, **backbone_options) -> None:
        super().__init__()
        size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        self.backbone = MetaFormerVision(in_chans, causal=False, spatial_shape=size, variant=variant,
                                         **backbone_options)
        self.head = nn.Linear(self.backbone.out_dim, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)
        self.img_size = size

    def forward(self, images: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, num_classes)
        if tuple(images.shape[-2:]) != self.img_size:
            raise ValueError(f"poolformer: built for {self.img_size} images, got {tuple(images.shape[-2:])}")
        tokens = rearrange(images, "b c h w -> b (h w) c")
        return self.head(self.backbone(tokens).mean(dim=1))


def poolformer(variant: str = "s12", in_chans: int = 3, num_classes: int = 1000, **options) -> PoolFormer:
    """PoolFormer-S12/S24/S36/M36/M48 as in the paper (``options``: ``img_size``, ``drop_path``, ...)."""
    return PoolFormer(variant, in_chans=in_chans, num_classes=num_classes, **options)
