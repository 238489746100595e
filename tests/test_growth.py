"""TokenFormer progressive growth of a whole model built from the configs: the loss is unchanged, the written
checkpoint fits the grown config, its optimizer state resumes, and the CLI reports bad input clearly."""


import pytest
import torch
from omegaconf import OmegaConf

from alt_arch.linears.pattention import pattention_layers
from ebt.analysis.tools import growth
from ebt.analysis.tools.growth import grow_checkpoint, grow_model
from ebt.errors import ConfigError
from ebt.options import read_options
from ebt.training.build import build_lit_model, build_task
from tests.utils import compose_config, run_cli

SMALL = ["experiment=tokenformer", "model.dim=16", "model.backbone.n_layers=2", "data.batch_size=4"]


def _trained_checkpoint(cfg):
    """A checkpoint shaped like the ones scripts/train.py writes, after two AdamW steps."""
    task = build_task(cfg)
    torch.manual_seed(0)
    lit = build_lit_model(cfg, task)
    opt = lit.configure_optimizers()["optimizer"]
    for i in range(2):
        opt.zero_grad()
        lit.objective.loss(task.make_batch("train", i, 4))[0].backward()
        opt.step()
    ckpt = {"state_dict": lit.state_dict(), "hyper_parameters": dict(lit.hparams),
            "optimizer_states": [opt.state_dict()], "global_step": 2}
    return task, lit, ckpt


@pytest.mark.parametrize("normalization", ["l2_gelu", "gelu_l2"])
def test_growth_preserves_the_loss_of_the_whole_model(normalization, tmp_path):
    cfg = compose_config([*SMALL, f"model.linear.normalization={normalization}",
                          f"model.mlp.normalization={normalization}"], tmp_path)
    task, lit, _ = _trained_checkpoint(cfg)
    batch = task.make_batch("val", 0, 8)
    with torch.no_grad():
        before = lit.objective.loss(batch)[0]
    assert grow_model(lit.objective, 5) == 2 * 5  # Q, K, V, O and the FFN in each of 2 blocks
    with torch.no_grad():
        after = lit.objective.loss(batch)[0]
    torch.testing.assert_close(after, before, atol=1e-6, rtol=0)


def test_grown_checkpoint_loads_into_the_grown_config_and_resumes(tmp_path):
    cfg = compose_config(SMALL, tmp_path)
    task, lit, ckpt = _trained_checkpoint(cfg)
    batch = task.make_batch("val", 0, 8)
    with torch.no_grad():
        before = lit.objective.loss(batch)[0]

    grown = grow_checkpoint(ckpt, 4, path="test.ckpt")
    new_cfg = OmegaConf.create(grown["hyper_parameters"]["config"])
    assert new_cfg.model.linear.extra_slots == 4 and new_cfg.model.mlp.extra_slots == 4
    model = build_lit_model(new_cfg, task)
    model.load_state_dict(grown["state_dict"])  # strict: every shape fits the grown config
    slots = sorted({m.slots for _, m in pattention_layers(model)})
    assert slots == [16 + 4, 64 + 4]
    with torch.no_grad():
        torch.testing.assert_close(model.objective.loss(batch)[0], before, atol=1e-6, rtol=0)

    opt = model.configure_optimizers()["optimizer"]
    opt.load_state_dict(grown["optimizer_states"][0])  # padded AdamW moments
    q = model.objective.backbone.blocks[0].mixer.q
    assert torch.count_nonzero(opt.state[q.keys]["exp_avg"][16:]) == 0
    assert torch.equal(opt.state[q.keys]["exp_avg"][:16], ckpt["optimizer_states"][0]["state"][
        next(i for i, p in enumerate(p for g in opt.param_groups for p in g["params"]) if p is q.keys)]["exp_avg"])
    model.objective.loss(task.make_batch("train", 2, 4))[0].backward()
    opt.step()
    assert torch.isfinite(q.keys).all() and q.keys[16:].abs().sum() > 0  # new keys moved off zero


def test_growing_a_dense_model_is_a_clear_error(tmp_path):
    cfg = compose_config(["model.dim=16"], tmp_path)
    _, _, ckpt = _trained_checkpoint(cfg)
    with pytest.raises(ConfigError, match="no Pattention"):
        grow_checkpoint(ckpt, 2)


def test_cli_grows_a_checkpoint_and_rejects_bad_input(tmp_path, capsys):
    cfg = compose_config(SMALL, tmp_path)
    _, _, ckpt = _trained_checkpoint(cfg)
    path = tmp_path / "last.ckpt"
    torch.save(ckpt, path)
    growth.main(read_options([f"ckpt={path}", "slots=+3"], growth.DEFAULTS))  # in-process: no torch re-import
    assert "model.linear.extra_slots=3 model.mlp.extra_slots=3" in capsys.readouterr().out
    out = torch.load(tmp_path / "last-grown3.ckpt", weights_only=False)
    assert out["growth"][-1]["added"] == 3
    bad = run_cli("grow.py", f"ckpt={path}", "slots=many", cwd=tmp_path, timeout=120)
    assert bad.returncode == 2 and "slots='many'" in bad.stderr
    missing = run_cli("grow.py", "slots=2", cwd=tmp_path, timeout=120)
    assert missing.returncode == 2 and "ckpt= and slots= are required" in missing.stderr
