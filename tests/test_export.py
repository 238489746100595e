"""Shareable checkpoints: export -> load gives the same model (predictor with tied weights, EBT), wherever a checkpoint
is accepted (restore, eval, generate, init_from); broken exports are refused with one clear error."""

import inspect
import json
import shutil

import pytest
import torch
from omegaconf import OmegaConf

import ebt.training.export as export_module
from ebt.analysis.tools.evaluate import evaluate
from ebt.errors import CheckpointError, ConfigError
from ebt.objectives import predict
from ebt.training.build import build_lit_model, build_task
from ebt.training.export import export
from ebt.training.export_format import load_exported
from ebt.training.restore import load_run, resolve_source
from ebt.training.train import init_weights, train
from tests.utils import ROOT, compose_config, run_cli

TINY = ["data=text", "data.task.seq_len=16", "model.dim=16", "model.backbone.n_layers=1", "kernels=torch",
        "data.batch_size=4", "data.eval_batches=1", "data.eval_batch_size=4", "trainer.max_steps=2",
        "trainer.val_check_interval=2", "optim.warmup_steps=0", "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false"]
OBJECTIVES = {"predict": ["model/objective=predict", "model.objective.tie_embeddings=true"], "ebt": []}


def tiny(corpus, *extra: str) -> list[str]:
    return [*TINY, f"data.task.path={corpus}", *extra]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A 2-step predictor (tied embeddings: shared tensors) and EBT on a small local corpus, each exported."""
    root = tmp_path_factory.mktemp("export")
    corpus = root / "corpus.py"
    corpus.write_text(inspect.getsource(predict) * 3)
    made = {"corpus": corpus}
    for name, overrides in OBJECTIVES.items():
        train(compose_config(tiny(corpus, *overrides), root / name))
        export(OmegaConf.create({"ckpt": str(root / name), "out": str(root / f"{name}_x")}))
        made[name] = root / name
    return made


def batch_of(run):
    return run.task.make_batch("val", 0, 2)


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_an_export_loads_to_the_same_model_and_predictions(runs, name):
    ckpt, exported = load_run(runs[name]), load_run(f"{runs[name]}_x")
    ours, theirs = ckpt.objective.state_dict(), exported.objective.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    predictions = []
    for run in (ckpt, exported):
        torch.manual_seed(0)  # the EBT's initial candidates
        predictions.append(run.objective.predict(batch_of(run)).detach())
    assert torch.equal(*predictions)
    info = json.loads((runs[name].parent / f"{name}_x" / "export.json").read_text())
    assert info["format_version"] == 1 and info["parameters"] == sum(p.numel() for p in ckpt.objective.parameters())
    assert info["source"].endswith("last.ckpt") and info["objective"] == type(ckpt.objective).__name__
    folder = runs[name].parent / f"{name}_x"
    assert resolve_source(folder / "model.safetensors") == resolve_source(folder) == str(folder)
    if name == "predict":  # the tied head is stored once and tied again on load
        assert info["tied"] == {"objective.head.weight": "objective.encoder.weight"}
        assert exported.objective.head.weight is exported.objective.encoder.weight


def test_eval_of_an_export_equals_eval_of_its_checkpoint(runs, tmp_path):
    rows = [evaluate(OmegaConf.merge(OmegaConf.load(ROOT / "configs" / "eval.yaml"),
                                     {"ckpt": str(source), "out_dir": str(tmp_path / str(i)), "eval_batches": 1}))
            for i, source in enumerate((runs["ebt"], f"{runs['ebt']}_x"))]
    assert rows[0] == rows[1]


def test_init_from_starts_training_from_the_exported_weights(runs, tmp_path):
    exported = load_exported(f"{runs['ebt']}_x")["state_dict"]
    cfg = compose_config(tiny(runs["corpus"], f"init_from={runs['ebt']}_x", "trainer.max_steps=1",
                              "optim.lr=1e-30", "optim.weight_decay=0"), tmp_path / "ft")
    train(cfg)  # one optimizer step of ~1e-30: the weights stay the exported ones
    tuned = load_run(tmp_path / "ft").objective.state_dict()
    assert all(torch.allclose(tuned[k.removeprefix("objective.")], v, rtol=0, atol=1e-20) for k, v in exported.items())
    fresh = build_lit_model(cfg, build_task(cfg)).state_dict()
    assert not all(torch.equal(fresh[k], v) for k, v in exported.items()), "the export differs from a fresh init"


def test_init_from_refuses_other_shapes(runs, tmp_path):
    cfg = compose_config(tiny(runs["corpus"], "model.dim=32"), tmp_path)
    model = build_lit_model(cfg, build_task(cfg))
    with pytest.raises(CheckpointError, match=r"init_from=.*shape mismatch: objective\..* \(16, 16\) vs \(32, 32\)"):
        init_weights(model, f"{runs['ebt']}_x")


def test_broken_exports_are_refused_by_name(runs, tmp_path):
    source = runs["ebt"].parent / "ebt_x"
    for missing in ("config.yaml", "model.safetensors"):
        folder = tmp_path / f"no_{missing}"
        shutil.copytree(source, folder)
        (folder / missing).unlink()
        with pytest.raises(CheckpointError, match=f"has no {missing}"):
            load_run(folder)
    folder = tmp_path / "altered"
    shutil.copytree(source, folder)
    data = bytearray((folder / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (folder / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="do not match their checksum"):
        load_run(folder)
    (folder / "model.safetensors").write_bytes(bytes(data[:100]))
    with pytest.raises(CheckpointError, match="unreadable"):
        load_run(folder)


def test_export_is_atomic_and_refuses_a_non_empty_folder(runs, tmp_path, monkeypatch):
    options = {"ckpt": str(runs["ebt"]), "out": str(tmp_path / "x")}
    export(OmegaConf.create(options))
    with pytest.raises(ConfigError, match="exists and is not empty"):
        export(OmegaConf.create(options))
    before = (tmp_path / "x" / "model.safetensors").read_bytes()

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(export_module, "save_file", disk_full)
    with pytest.raises(OSError):
        export(OmegaConf.create({**options, "overwrite": True}))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x"], "no temporary folder is left behind"
    assert (tmp_path / "x" / "model.safetensors").read_bytes() == before, "the previous export is intact"
    monkeypatch.undo()
    export(OmegaConf.create({**options, "ckpt": str(runs["predict"]), "overwrite": True}))
    assert json.loads((tmp_path / "x" / "export.json").read_text())["objective"] == "Predict"


def test_the_commands_export_and_refuse_an_export_without_its_config(runs, tmp_path):
    result = run_cli("export.py", f"ckpt={runs['predict']}", f"out={tmp_path / 'x'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert {p.name for p in (tmp_path / "x").iterdir()} == {"model.safetensors", "config.yaml", "export.json"}
    (tmp_path / "x" / "config.yaml").unlink()
    result = run_cli("generate.py", f"ckpt={tmp_path / 'x'}", "prompt=x", cwd=tmp_path)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1 and "has no config.yaml" in errors[0], result.stderr[-2000:]
