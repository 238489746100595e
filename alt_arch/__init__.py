"""Plain-torch building blocks: mixers, linear layers, blocks, backbones.

Nothing in this package imports Lightning or Hydra (tests/test_layering.py enforces it).

The part contract (see README "Adding a part"):

* ``linear(d_in, d_out) -> nn.Module`` maps ``(..., d_in)`` to ``(..., d_out)``.
* ``mixer(dim, *, causal, linear, **options) -> nn.Module`` maps ``(B, N, C)`` to ``(B, N, C)``;
  unknown keyword arguments raise ``TypeError``; a mixer that cannot honour ``causal`` raises
  ``MixerCapabilityError``. Multi-dimensional mixers receive ``spatial_shape``.
* ``backbone(dim, *, causal, mixer, linear) -> nn.Module`` maps ``(B, N, C)`` to ``(B, N, C)``.
"""

from alt_arch.errors import MixerCapabilityError

__all__ = ["MixerCapabilityError"]
