"""summary.json says what a run cost and what ran: measured FLOPs of a training step (the EBT's larger than the
predictor's) and of a thinking step, the git commit and dirty flag, library versions and the seed."""

import json
import re
import shutil
import subprocess

import pytest
import torch

from ebt.training.build import build_lit_model, build_task
from ebt.training.flops import measured_flops
from ebt.training.provenance import SOURCE_ROOT, git_state
from ebt.training.train import train
from tests.utils import compose_config

TINY = ["debug=fdr", "model.dim=16", "model.backbone.n_layers=1", "data.batch_size=4", "data.eval_batch_size=8",
        "data.eval_batches=1", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
        "kernels=torch", "seed=7"]


def in_git_checkout() -> bool:
    if shutil.which("git") is None:
        return False
    result = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=SOURCE_ROOT, capture_output=True, text=True)
    return result.returncode == 0


@pytest.fixture(scope="module")
def summaries(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for objective in ("predict", "ebt"):
        train(compose_config([*TINY, f"model/objective={objective}"], root / objective))
        out[objective] = json.loads((root / objective / "summary.json").read_text())
    return out


def test_train_step_flops_are_measured_and_the_ebt_costs_more(summaries):
    predict, ebt = summaries["predict"], summaries["ebt"]
    assert predict["forward_flops_per_token"] == pytest.approx(ebt["forward_flops_per_token"], rel=0.01)  # analytic
    assert predict["flops_batch_size"] == ebt["flops_batch_size"] == 1
    assert 0 < 3 * predict["forward_flops_per_token"] <= predict["train_step_flops"]  # forward + backward, T tokens
    assert ebt["train_step_flops"] > 2 * predict["train_step_flops"]  # thinking steps, second order
    assert predict["thinking_step_flops"] is None
    assert 0 < ebt["thinking_step_flops"] < ebt["train_step_flops"]


def test_seed_versions_and_git(summaries):
    summary = summaries["ebt"]
    assert summary["seed"] == 7
    versions = summary["versions"]
    assert versions["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert versions["lightning"] and versions["hydra-core"] and versions["python"]
    if not in_git_checkout():
        assert summary["git"] == {"commit": None, "dirty": None}
        pytest.skip("the code is not a git checkout: no commit to compare")
    assert re.fullmatch(r"[0-9a-f]{40}", summary["git"]["commit"]) and isinstance(summary["git"]["dirty"], bool)


def test_git_state_outside_a_checkout_is_none(tmp_path):
    assert git_state(tmp_path) == {"commit": None, "dirty": None}


def test_measuring_leaves_the_model_as_it_was(tmp_path):
    cfg = compose_config(["model/objective=ebt", "model.dim=16", "model/backbone=looped", "kernels=torch",
                          "model.objective.replay_size=4"], tmp_path)
    task = build_task(cfg)
    ebt = build_lit_model(cfg, task).objective.eval()
    progress = ebt.backbone.progress.clone()
    replay_before = (ebt.replay.samples, ebt.replay.candidates)
    rng = torch.get_rng_state()
    flops = measured_flops(ebt, task)
    assert flops["train_step_flops"] > 0 and flops["thinking_step_flops"] > 0
    assert not ebt.training and torch.equal(ebt.backbone.progress, progress)
    assert (ebt.replay.samples, ebt.replay.candidates) == replay_before
    assert all(p.grad is None for p in ebt.parameters()) and torch.equal(torch.get_rng_state(), rng)


@pytest.mark.parametrize("data", ["matrix_inverse", "icl_regression"])
def test_flops_of_a_continuous_ebt_whose_candidate_enters_a_module_directly(data, tmp_path):
    """A continuous candidate is read by ``Linear`` itself (no op before the module): counting must not break the
    gradient with respect to it (FlopCounterMode's module hooks did)."""
    cfg = compose_config(["model/objective=ebt", f"data={data}", "model.dim=16", "model.backbone.n_layers=1",
                          "kernels=torch"], tmp_path)
    task = build_task(cfg)
    flops = measured_flops(build_lit_model(cfg, task).objective, task)
    assert flops["train_step_flops"] > 0 and flops["thinking_step_flops"] > 0


@pytest.mark.parametrize("objective,compile_mode", [("ebt", "model"), ("ebt", "thinking_step"), ("predict", "model")])
def test_every_compile_value_trains_to_a_summary_with_the_eager_flop_count(objective, compile_mode, tmp_path,
                                                                            monkeypatch):
    """The summary's FLOP counter is a dispatch mode: compiled frames run eagerly under it (torch.compile refuses
    one), so the run ends with summary.json and the counts of the eager step."""
    from ebt.objectives import compiled

    monkeypatch.setattr(compiled, "BACKEND", "aot_eager")  # dynamo + aot_autograd, no C++ code generation
    monkeypatch.setattr(compiled, "_CACHE", {})
    torch._dynamo.reset()
    runs = {}
    for mode in ("none", compile_mode):
        train(compose_config([*TINY, f"model/objective={objective}", f"compile={mode}"], tmp_path / mode))
        runs[mode] = json.loads((tmp_path / mode / "summary.json").read_text())
    for key in ("train_step_flops", "thinking_step_flops"):
        assert runs[compile_mode][key] == runs["none"][key]
    assert runs[compile_mode]["train_step_flops"] > 0
