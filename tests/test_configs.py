"""Every option of every config group composes and instantiates; new options join automatically.

An option that needs other choices to make sense (an image backbone needs image data) says so in its
file with a line ``# test-with: data=digits ...``.
"""

import pytest
import torch
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ConfigAttributeError, ConfigKeyError

from ebt.training.build import build_datamodule, build_lit_model, build_task
from ebt.training.train import instantiate_group
from tests.utils import compose_config, declared_overrides, group_options, run_cli

MODEL_GROUPS = ["model/mixer", "model/linear", "model/mlp", "model/backbone", "model/objective"]
SMALL = ["model.dim=32", "data.batch_size=4", "data.eval_batch_size=4", "data.eval_batches=1"]


def _cases(groups):
    return [pytest.param(g, o, id=f"{g}={o}") for g in groups for o in group_options(g)]


def _one_training_step(cfg):
    task = build_task(cfg)
    model = build_lit_model(cfg, task)
    batch = task.make_batch("train", 0, 4)
    loss, logs = model.objective.loss(batch)
    loss.backward()
    assert torch.isfinite(loss), "loss is not finite"
    return model, task


@pytest.mark.parametrize("objective", group_options("model/objective"))
@pytest.mark.parametrize(("group", "option"), _cases(MODEL_GROUPS))
def test_model_part_trains_one_step(group, option, objective, tmp_path):
    """Every part under every objective (the part's own option wins when it is an objective option); an objective
    that needs a kind of task says so with its own ``# test-with:`` line (e.g. continuous data)."""
    needs = [declared_overrides("model/objective", objective), declared_overrides(group, option)]
    data = [{o for o in overrides if o.startswith("data=")} for overrides in needs]
    if all(data) and data[0] != data[1]:
        pytest.skip(f"{objective} needs {data[0]}, {group}={option} needs {data[1]}: no task suits both")
    cfg = compose_config([*SMALL, f"model/objective={objective}", *needs[0], f"{group}={option}", *needs[1]],
                         tmp_path)
    model, _ = _one_training_step(cfg)
    assert any(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize(("group", "option"), _cases(["data"]))
def test_data_option_makes_batches(group, option, tmp_path):
    extra = declared_overrides(group, option)
    if "SKIP" in extra:
        pytest.skip(f"data={option} needs files on disk (tested in its own test)")
    cfg = compose_config([*SMALL, f"data={option}", *extra], tmp_path)
    task = build_task(cfg)
    datamodule = build_datamodule(cfg, task)
    for split in ("train", *task.eval_splits):
        batch = task.make_batch(split, 0, 2)
        assert batch["targets"].shape[0] == 2
    assert len(datamodule.val_dataloader()) == len(task.eval_splits)
    _one_training_step(cfg)


@pytest.mark.parametrize("option", group_options("experiment"))
def test_experiment_composes_and_builds(option, tmp_path):
    cfg = compose_config([f"experiment={option}", *declared_overrides("experiment", option)], tmp_path)
    build_lit_model(cfg, build_task(cfg))


@pytest.mark.parametrize("option", group_options("logger"))
def test_logger_instantiates(option, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    cfg = compose_config([f"logger={option}"], tmp_path)
    loggers = instantiate_group(cfg.logger)
    assert loggers and all(lg.save_dir for lg in loggers)


@pytest.mark.parametrize(("group", "option"), _cases(["trainer", "debug", "callbacks"]))
def test_other_groups_compose(group, option, tmp_path):
    cfg = compose_config([f"{group}={option}"], tmp_path)
    assert cfg.trainer.max_steps != 0


def test_unknown_option_and_key_fail_clearly(tmp_path):
    with pytest.raises(ConfigCompositionException, match="Could not find 'model/mixer/nonexistent'"):
        compose_config(["model/mixer=nonexistent"], tmp_path)
    with pytest.raises((ConfigAttributeError, ConfigKeyError, ConfigCompositionException), match="nhead"):
        compose_config(["model.mixer.nhead=3"], tmp_path)


def test_unknown_constructor_argument_is_an_error(tmp_path):
    cfg = compose_config([*SMALL, "+model.mixer.window=3"], tmp_path)
    with pytest.raises(Exception, match="window"):
        build_lit_model(cfg, build_task(cfg))


def test_help_lists_every_group(tmp_path):
    result = run_cli("train.py", "--help", cwd=tmp_path, timeout=60)
    assert result.returncode == 0, result.stderr
    for group in ["model/mixer", "model/backbone", "model/objective", "data", "logger", "experiment", "debug"]:
        assert f"{group}:" in result.stdout, f"--help does not list {group}"
