"""The hierarchical MetaFormer / PoolFormer backbone: shapes, gradients, paper parameter counts, errors."""

from functools import partial

import pytest
import torch

from alt_arch.backbones.metaformer_vision import VARIANTS, MetaFormerVision, poolformer
from alt_arch.errors import MixerCapabilityError
from alt_arch.mixers.attention import Attention
from alt_arch.mixers.pool import Pool
from alt_arch.utils import num_params

TINY = {"depths": [1, 1, 2, 1], "widths": [8, 8, 16, 16], "stem_kernel": 3, "stem_stride": 1, "stem_padding": 1}


def tiny(mixer=Pool, size=8, **options):
    torch.manual_seed(0)
    return MetaFormerVision(4, causal=False, mixer=mixer, spatial_shape=(size, size), **{**TINY, **options})


@pytest.mark.parametrize("mixer", [Pool, partial(Attention, n_heads=2)], ids=["pool", "attention"])
def test_shapes_grids_and_no_nan(mixer):
    model = tiny(mixer)
    assert model.grids == [(8, 8), (4, 4), (2, 2), (1, 1)] and model.out_dim == 16
    y = model(torch.randn(3, 64, 4))
    assert y.shape == (3, 1, 16) and torch.isfinite(y).all()


def test_paper_stem_on_a_rectangular_grid():
    model = MetaFormerVision(3, causal=False, spatial_shape=(32, 24), depths=[1, 1, 1, 1], widths=[8, 8, 8, 8])
    assert model.grids == [(8, 6), (4, 3), (2, 2), (1, 1)]
    assert model(torch.randn(2, 32 * 24, 3)).shape == (2, 1, 8)


def test_gradients_reach_every_parameter():
    # 16x16 input: the last stage is 2x2 (on a 1x1 grid pooling is avg(u) - u = 0 and passes no gradient)
    model = tiny(size=16, layer_scale_init=0.5, drop_path=0.0)  # large layer scale so no gradient is ~0
    model(torch.randn(2, 256, 4)).square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"no gradient for {missing}"


def test_block_equations_layer_scale_and_drop_path():
    model = tiny(layer_scale_init=1e-5, drop_path=0.3)
    rates = [b.drop_path.p for stage in model.stages for b in stage]
    assert rates == pytest.approx([0.3 * i / 4 for i in range(5)])  # 5 blocks, linear rise
    block = model.stages[2][0]
    assert torch.equal(block.ls1, torch.full((16,), 1e-5)) and torch.equal(block.ls2, torch.full((16,), 1e-5))
    block.eval()
    x = torch.randn(2, 4, 16)
    expected = x + block.ls1 * block.mixer(block.norm1(x))
    expected = expected + block.ls2 * block.mlp.fc2(torch.nn.functional.gelu(block.mlp.fc1(block.norm2(expected))))
    torch.testing.assert_close(block(x), expected)


def test_group_norm_normalises_over_positions_and_channels():
    norm = tiny().norm
    x = torch.randn(2, 5, 16) * 3 + 1
    y = norm(x)
    torch.testing.assert_close(y.mean(dim=(1, 2)), torch.zeros(2), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.var(dim=(1, 2), unbiased=False), torch.ones(2), atol=1e-3, rtol=0)


def test_drop_path_is_stochastic_in_training_only():
    model = tiny(layer_scale_init=1.0, drop_path=0.9)
    x = torch.randn(8, 64, 4)
    model.train()
    torch.manual_seed(1)
    a = model(x)
    torch.manual_seed(2)
    assert not torch.allclose(a, model(x))
    model.eval()
    torch.testing.assert_close(model(x), model(x))


# parameters at 1000 classes, Table 1 of the paper (millions)
PAPER_PARAMS = {"s12": 11.9, "s24": 21.4, "s36": 30.9, "m36": 56.2, "m48": 73.5}


@pytest.mark.parametrize("variant", sorted(PAPER_PARAMS))
def test_paper_parameter_counts(variant):
    with torch.device("meta"):
        model = poolformer(variant, in_chans=3, num_classes=1000)
    assert num_params(model) / 1e6 == pytest.approx(PAPER_PARAMS[variant], rel=0.02)
    assert model.backbone.depths == VARIANTS[variant][0]
    assert model.backbone.stages[0][0].ls1.shape == (VARIANTS[variant][1][0],)


def test_full_classifier_runs_on_small_images():
    model = poolformer("s12", in_chans=1, num_classes=7, img_size=16, depths=[1, 1, 1, 1], widths=[8, 8, 8, 8])
    assert model(torch.randn(2, 1, 16, 16)).shape == (2, 7)
    with pytest.raises(ValueError, match="built for"):
        model(torch.randn(2, 1, 8, 8))


def test_errors_are_clear():
    with pytest.raises(MixerCapabilityError, match="non-causal"):
        MetaFormerVision(4, causal=True, mixer=Pool, spatial_shape=(8, 8))
    with pytest.raises(MixerCapabilityError, match="2-D token grid"):
        MetaFormerVision(4, causal=False, mixer=Pool, spatial_shape=None)
    with pytest.raises(ValueError, match="unknown variant"):
        MetaFormerVision(4, causal=False, mixer=Pool, spatial_shape=(8, 8), variant="s99")
    with pytest.raises(ValueError, match="same non-zero number of stages"):
        tiny(depths=[1, 1], widths=[8, 8, 8])
    with pytest.raises(ValueError, match="cannot map"):
        MetaFormerVision(4, causal=False, mixer=Pool, spatial_shape=(2, 2), stem_kernel=7, stem_padding=0)


def test_model_mlp_is_honoured_and_defaults_to_the_papers_conv_mlp(tmp_path):
    from alt_arch.backbones.metaformer_vision import ConvMLP
    from alt_arch.mlp import GeluMLP, SwiGLU
    from ebt.training.build import build_lit_model, build_task
    from tests.utils import compose_config

    def block_mlps(*overrides):
        cfg = compose_config(["data=digits", "model/objective=predict", "model/mixer=pool",
                              "model/backbone=metaformer_vision", "model.dim=8",
                              *(f"model.backbone.{k}={v}".replace(" ", "") for k, v in TINY.items()), *overrides],
                             tmp_path)
        model = build_lit_model(cfg, build_task(cfg)).objective
        return cfg, [b.mlp for stage in model.backbone.stages for b in stage]

    cfg, mlps = block_mlps()
    assert cfg.model.mlp._target_.endswith("ConvMLP") and all(type(m) is ConvMLP for m in mlps)
    _, mlps = block_mlps("model/mlp=gelu")
    assert all(type(m) is GeluMLP for m in mlps) and mlps[-1].up.in_features == 16  # built at the stage's width
    _, mlps = block_mlps("model/mlp=swiglu")
    assert all(type(m) is SwiGLU for m in mlps)


def test_a_config_stored_before_the_mlp_was_pluggable_rebuilds_the_papers_mlp():
    from alt_arch.backbones.metaformer_vision import ConvMLP
    from alt_arch.mlp import SwiGLU

    old = tiny(mlp=SwiGLU, mlp_ratio=2.0)  # what such a config holds: model/mlp=swiglu (then ignored) + mlp_ratio
    mlp = old.stages[0][0].mlp
    assert type(mlp) is ConvMLP and mlp.fc1.out_features == 16 and mlp.fc1.bias is not None
