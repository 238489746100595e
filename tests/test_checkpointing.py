"""Activation checkpointing (``model.backbone.checkpoint=true``): the same loss and the same gradients as the plain
path, bit for bit on the CPU, for the stack and looped backbones, the EBT's second-order training included."""

import pytest
import torch
from omegaconf import OmegaConf

from ebt.training.build import build_lit_model, build_task
from ebt.training.checkpoint import upgrade_config
from ebt.training.resume import config_differences
from tests.utils import compose_config

SMALL = ["model.dim=16", "kernels=torch"]
CASES = {
    # two-stream: forward_context / forward_candidates, context cache
    "ebt_stack": ["model/objective=ebt", "model.backbone.n_layers=1"],
    "ebt_stack_nocache_nodetach": ["model/objective=ebt", "model.backbone.n_layers=1",
                                   "model.objective.cache_context=false", "model.objective.detach_steps=false"],
    "ebt_looped_window": ["model/objective=ebt", "model/backbone=looped", "model.backbone.loops=3",
                          "model.backbone.train_window=1"],  # truncated iterations on detached loop parameters
    "ebt_looped_whole_target": ["model/objective=ebt", "model/backbone=looped", "model.backbone.loops=2",
                                "model.backbone.train_window=1", "data=matrix_inverse", "data.task.n=4"],
    # auxiliary losses: a recomputation must not count as another pass
    "ebt_moh": ["model/objective=ebt", "model/mixer=moh", "model.backbone.n_layers=1"],
    "predict_looped": ["model/objective=predict", "model/backbone=looped", "model.backbone.loops=2"],
    "predict_moh": ["model/objective=predict", "model/mixer=moh", "model.backbone.n_layers=1"],
}


def train_step(tmp_path, overrides, checkpoint: bool):
    cfg = compose_config([*SMALL, *overrides, f"model.backbone.checkpoint={checkpoint}"], tmp_path)
    task = build_task(cfg)
    torch.manual_seed(0)
    objective = build_lit_model(cfg, task).objective
    assert objective.backbone.checkpoint is checkpoint
    batch = task.make_batch("train", 0, 4)
    torch.manual_seed(1)
    loss, logs = objective.loss(batch)
    loss.backward()
    leftover = [m for m in objective.modules() if getattr(m, "aux_passes", None)]
    return loss, logs, {n: p.grad for n, p in objective.named_parameters() if p.grad is not None}, leftover


@pytest.mark.parametrize("case", sorted(CASES))
def test_checkpointing_gives_the_same_loss_and_gradients(case, tmp_path):
    loss, logs, grads, _ = train_step(tmp_path, CASES[case], checkpoint=False)
    loss_ckpt, logs_ckpt, grads_ckpt, leftover = train_step(tmp_path, CASES[case], checkpoint=True)
    assert torch.equal(loss, loss_ckpt)
    assert logs.keys() == logs_ckpt.keys() and all(torch.equal(logs[k], logs_ckpt[k]) for k in logs)
    assert grads.keys() == grads_ckpt.keys() and len(grads) > 0
    different = [n for n in grads if not torch.equal(grads[n], grads_ckpt[n])]
    assert not different, different
    assert not leftover  # no stale auxiliary-loss passes from recomputations


def test_checkpointing_is_on_only_while_training_with_gradients(tmp_path):
    cfg = compose_config([*SMALL, "model.backbone.checkpoint=true"], tmp_path)
    backbone = build_lit_model(cfg, build_task(cfg)).objective.backbone
    assert backbone.checkpointing()
    with torch.no_grad():
        assert not backbone.checkpointing()
    assert not backbone.eval().checkpointing()


@pytest.mark.parametrize("backbone", ["stack", "looped"])
def test_the_config_key_composes_and_defaults_off(backbone, tmp_path):
    plain = compose_config([f"model/backbone={backbone}"], tmp_path)
    assert plain.model.backbone.checkpoint is False
    on = compose_config([f"model/backbone={backbone}", "model.backbone.checkpoint=true"], tmp_path)
    assert on.model.backbone.checkpoint is True
    new = OmegaConf.to_container(plain, resolve=True)
    old = OmegaConf.to_container(plain, resolve=True)
    del old["model"]["backbone"]["checkpoint"]  # a checkpoint's config stored before the key existed
    assert config_differences(upgrade_config(old), upgrade_config(new)) == {}  # so it resumes
