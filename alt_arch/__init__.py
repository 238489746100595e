"""Plain-torch building blocks: mixers, linear layers, blocks, backbones.

Nothing in this package imports Lightning or Hydra (tests/test_layering.py enforces it).

The part contract (see README "Adding a part"):

* ``linear(d_in, d_out) -> nn.Module`` maps ``(..., d_in)`` to ``(..., d_out)``.
* ``mixer(dim, *, causal, linear, spatial_shape=None, **options) -> nn.Module`` maps ``(B, N, C)`` to
  ``(B, N, C)``; unknown keyword arguments raise ``TypeError``; a mixer that cannot honour ``causal`` (or
  needs a ``spatial_shape`` it was not given) raises ``MixerCapabilityError``. ``spatial_shape`` is the
  token grid (e.g. ``(H, W)`` with ``N = H * W``) for image tasks and ``None`` for sequences; 1-D mixers
  accept and may ignore it.
* ``mlp(dim, *, linear, **options) -> nn.Module``: the channel MLP, ``(..., dim)`` to ``(..., dim)``.
* ``backbone(dim, *, causal, mixer, mlp, linear, spatial_shape=None) -> nn.Module`` maps ``(B, N, C)`` to
  ``(B, N', out_dim)`` (``N' = N`` and ``out_dim = dim`` except for hierarchical backbones, which set the
  ``out_dim`` attribute) and ends with a norm.
* Auxiliary losses (e.g. a load-balance loss, already weighted) and scalars to log are reported once per
  forward pass with :func:`alt_arch.utils.record_aux`. Objectives clear the record before a training step and
  collect it after with :func:`alt_arch.utils.collect_aux`: per part, the mean over every pass of the step.
"""

from alt_arch.errors import MixerCapabilityError

__all__ = ["MixerCapabilityError"]
