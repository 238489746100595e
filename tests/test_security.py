"""Opening what others share runs none of their code (docs/security.md), and the last unclear errors are one line.

The hostile files are built here: a ``.ckpt`` whose pickle carries an object with a marker-writing ``__reduce__``,
exports whose ``config.yaml`` names ``torch.load`` on a pickle the folder ships or a project function that writes a
file, altered tensors without their checksum, an optimizer state with a flipped bit, a CIFAR-10 batch with a payload.
Every entry point must refuse them with one ``error:`` line (exit 2) and the marker file must never appear.
"""

import inspect
import json
import os
import pickle
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from safetensors import safe_open
from safetensors.torch import save_file

from ebt.analysis.tools.evaluate import evaluate
from ebt.commands import options_command, run_checked
from ebt.errors import CheckpointError, ConfigError, DataError
from ebt.objectives import predict
from ebt.tasks.images import CIFAR10
from ebt.tasks.text_sources import DocumentReader, Unit
from ebt.training.checkpoint import SAFE_NAMES, AtomicCheckpointIO, load_checkpoint, stored_config, trusting
from ebt.training.export import export
from ebt.training.export_format import load_exported
from ebt.training.restore import load_run
from ebt.training.train import train
from tests.utils import ROOT, compose_config, run_cli

TINY = ["data=text", "data.task.seq_len=16", "model/objective=predict", "model.dim=16", "model.backbone.n_layers=1",
        "kernels=torch", "data.batch_size=4", "data.eval_batches=1", "data.eval_batch_size=4", "trainer.max_steps=2",
        "trainer.val_check_interval=2", "optim.warmup_steps=0", "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false"]
FIXTURE = ROOT / "tests" / "fixtures" / "ebt_tokenformer_layout_v1.ckpt"


class ShellPayload:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(self.marker)}",)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """A 2-step predictor on a small corpus (its run folder, checkpoint and export)."""
    root = tmp_path_factory.mktemp("security")
    corpus = root / "corpus.py"
    corpus.write_text(inspect.getsource(predict) * 2)
    overrides = [*TINY, f"data.task.path={corpus}"]
    train(compose_config(overrides, root / "run"))
    export(OmegaConf.create({"ckpt": str(root / "run"), "out": str(root / "export")}))
    return {"run": root / "run", "ckpt": root / "run" / "checkpoints" / "last.ckpt", "export": root / "export",
            "overrides": overrides}


def hostile_checkpoint(trained, tmp_path: Path) -> tuple[Path, Path]:
    """(a copy of the trained checkpoint that also carries a :class:`ShellPayload`, its marker)."""
    marker = tmp_path / "MARKER"
    checkpoint = torch.load(trained["ckpt"], weights_only=False)  # our own file
    checkpoint["note"] = ShellPayload(marker)
    path = tmp_path / "shared.ckpt"
    torch.save(checkpoint, path)
    return path, marker


def one_error(result, *words: str) -> str:
    """The single ``error:`` line of a command that exited 2 without a traceback, holding every word."""
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert all(word in errors[0] for word in words), errors[0]
    return errors[0]


# ------------------------------------------------------------------------------- 1. checkpoints are not unpickled
def test_todays_checkpoints_and_the_old_fixture_hold_only_allowed_types(trained):
    for path in (trained["ckpt"], FIXTURE):
        assert set(torch.serialization.get_unsafe_globals_in_checkpoint(path)) <= SAFE_NAMES
        checkpoint = load_checkpoint(path)
        assert checkpoint["rng_states"]["numpy"][1].dtype == np.uint32  # numpy's RNG state: an allowed array


ENTRY_POINTS = {
    "think": lambda ckpt, tmp: ("think.py", f"ckpt={ckpt}", f"out_dir={tmp / 'out'}"),
    "eval": lambda ckpt, tmp: ("eval.py", f"ckpt={ckpt}", f"out_dir={tmp / 'out'}"),
    "generate": lambda ckpt, tmp: ("generate.py", f"ckpt={ckpt}", "prompt=x", "max_new_tokens=1"),
    "export": lambda ckpt, tmp: ("export.py", f"ckpt={ckpt}", f"out={tmp / 'out'}"),
    "train-resume": lambda ckpt, tmp: ("train.py", f"ckpt_path={ckpt}", f"hydra.run.dir={tmp / 'run'}"),
    "train-init_from": lambda ckpt, tmp: ("train.py", f"init_from={ckpt}", f"hydra.run.dir={tmp / 'run'}"),
}


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_a_pickle_payload_is_refused_by_every_command(entry, trained, tmp_path):
    path, marker = hostile_checkpoint(trained, tmp_path)
    script, *args = ENTRY_POINTS[entry](path, tmp_path)
    extra = trained["overrides"] if script == "train.py" else []
    result = run_cli(script, *args, *extra, cwd=tmp_path)
    one_error(result, str(path), "posix.system", "trust_checkpoint=true")
    assert not marker.exists(), "unpickling ran the payload"


def test_the_tools_that_load_in_process_refuse_it_too(trained, tmp_path):
    """rollout.py, policy_eval.py, icl_eval.py (load_run / load_checkpoint) and Lightning's own resume load."""
    path, marker = hostile_checkpoint(trained, tmp_path)
    for load in (load_run, load_checkpoint, AtomicCheckpointIO().load_checkpoint):
        with pytest.raises(CheckpointError, match=r"holds .*posix\.system.*refused, nothing was run"):
            load(path)
    assert not marker.exists()


def test_trust_checkpoint_unpickles_it_after_one_warning(trained, tmp_path, capsys):
    path, marker = hostile_checkpoint(trained, tmp_path)
    with trusting(True):
        load_checkpoint(path)
    assert marker.exists(), "trust_checkpoint=true is a full unpickle"
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "runs any code" in warnings[0] and str(path) in warnings[0]


# ------------------------------------------------------------------------------ 2. stored configs build parts only
def tampered_export(trained, tmp_path: Path, task: dict) -> Path:
    folder = tmp_path / "export"
    shutil.copytree(trained["export"], folder)
    config = OmegaConf.load(folder / "config.yaml")
    config.data.task = task
    OmegaConf.save(config, folder / "config.yaml")
    return folder


def payloads(tmp_path: Path) -> dict[str, dict]:
    marker = tmp_path / "MARKER"
    torch.save(ShellPayload(marker), tmp_path / "payload.pt")
    return {"torch.load": {"_target_": "torch.load", "f": str(tmp_path / "payload.pt"), "weights_only": False},
            "file writer": {"_target_": "ebt.training.checkpoint.atomic_write_text", "path": str(marker),
                            "text": "ran"}}


@pytest.mark.parametrize("payload", ["torch.load", "file writer"])
def test_an_export_naming_other_targets_is_refused(payload, trained, tmp_path):
    folder = tampered_export(trained, tmp_path, payloads(tmp_path)[payload])
    result = run_cli("eval.py", f"ckpt={folder}", f"out_dir={tmp_path / 'out'}", cwd=tmp_path)
    one_error(result, "data.task._target_", "is not a part this project builds")
    assert not (tmp_path / "MARKER").exists()


def test_a_checkpoint_config_naming_other_targets_is_refused(trained, tmp_path):
    marker = tmp_path / "MARKER"
    checkpoint = load_checkpoint(trained["ckpt"])
    config = checkpoint["hyper_parameters"]["config"]
    config["data"]["task"] = payloads(tmp_path)["file writer"]
    with pytest.raises(CheckpointError, match=r"data\.task\._target_='ebt\.training\.checkpoint\.atomic_write_text'"):
        stored_config(checkpoint, "x.ckpt")
    # a part hidden behind an interpolation is resolved first, so it is seen (and named) too
    config["data"]["task"], config["trainer"]["hidden"] = "${trainer.hidden}", payloads(tmp_path)["torch.load"]
    with pytest.raises(CheckpointError, match=r"data\.task\._target_='torch\.load'"):
        stored_config(checkpoint, "x.ckpt")
    assert not marker.exists()


# ------------------------------------------------------------------------------------------- 3. checksums required
def strip_checksum(folder: Path, made_by: str) -> None:
    """Alter a tensor of an export, remove its ``weights_sha256`` (safetensors metadata and export.json) and say that
    ``made_by`` wrote it."""
    with safe_open(folder / "model.safetensors", framework="pt") as f:
        metadata = {k: v for k, v in (f.metadata() or {}).items() if k != "weights_sha256"}
        tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 - not a dict
    first = next(iter(tensors))
    tensors[first] = tensors[first] + 1
    save_file(tensors, folder / "model.safetensors", metadata={**metadata, "format": made_by})
    info = json.loads((folder / "export.json").read_text())
    info.pop("weights_sha256", None)
    (folder / "export.json").write_text(json.dumps({**info, "format": made_by}))


def test_an_export_without_its_checksum_is_refused(trained, tmp_path, capsys):
    folder = tmp_path / "export"
    shutil.copytree(trained["export"], folder)
    strip_checksum(folder, "ebt-export")
    with pytest.raises(CheckpointError, match="model.safetensors has no weights_sha256"):
        load_exported(folder)
    strip_checksum(folder, "another-tool")  # a folder that says another tool wrote it: loads after one warning
    load_exported(folder)
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "'another-tool'" in warnings[0] and "not checked" in warnings[0]


def test_a_bit_flip_in_the_optimizer_state_is_detected(trained, tmp_path):
    checkpoint = torch.load(trained["ckpt"], weights_only=False)
    state = next(s for s in checkpoint["optimizer_states"][0]["state"].values() if "exp_avg" in s)
    state["exp_avg"].view(-1).view(torch.int32)[0] ^= 1
    torch.save(checkpoint, tmp_path / "flipped.ckpt")
    for load in (load_checkpoint, AtomicCheckpointIO().load_checkpoint):  # tools, and Lightning's resume
        with pytest.raises(CheckpointError, match="optimizer state does not match its checksum"):
            load(tmp_path / "flipped.ckpt")
    del checkpoint["optimizer_sha256"]  # a checkpoint written before the field: the other checks only
    torch.save(checkpoint, tmp_path / "older.ckpt")
    assert load_checkpoint(tmp_path / "older.ckpt")["global_step"] == 2


# ---------------------------------------------------------------------------------------- 4. CIFAR-10 data files
def test_a_cifar_pickle_with_a_payload_is_refused(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    marker = tmp_path / "MARKER"
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1, 2, 3], b"batch_label": name.encode()}
        if name == "data_batch_3":
            batch[b"filenames"] = ShellPayload(marker)
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(DataError, match=r"data_batch_3 is not a CIFAR-10 python pickle \(it names posix\.system"):
        CIFAR10(root=str(tmp_path), val_size=2)
    result = run_cli("train.py", "data=cifar10", f"data.task.root={tmp_path}", f"hydra.run.dir={tmp_path / 'run'}",
                     cwd=tmp_path)
    one_error(result, "data_batch_3", "posix.system", "nothing was run")
    assert not marker.exists()


# ------------------------------------------------------------------------------------------------ 6. seed values
@pytest.mark.parametrize(("seed", "message"), [
    ("abc", r"^seed must be an integer, got 'abc' \(a string\)$"),
    ("-1", r"^seed=-1 is out of range: it must be an integer in \[0, 4294967295\]"),
    ("99999999999", r"^seed=99999999999 is out of range"),
])
def test_a_bad_seed_is_one_line_in_train_and_eval(seed, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        train(compose_config([f"seed={seed}"], tmp_path / "run"))
    value = int(seed) if seed.lstrip("-").isdigit() else seed  # as Hydra parses it
    cfg = OmegaConf.merge(OmegaConf.load(ROOT / "configs" / "eval.yaml"), {"seed": value})
    with pytest.raises(ConfigError, match=message):
        run_checked(evaluate, cfg)


def test_a_bad_seed_on_the_command_line(tmp_path):
    one_error(run_cli("eval.py", "seed=-1", cwd=tmp_path), "seed=-1 is out of range")
    one_error(run_cli("train.py", "seed=abc", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path),
              "seed must be an integer, got 'abc'")


# ---------------------------------------------------------------------------------- 7. collect: unreadable jobs
def test_collect_says_the_job_folders_were_found_but_unreadable(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)  # the command's one error line, not a traceback
    for seed in (0, 1):
        job = tmp_path / "grid" / f"seed-{seed}"
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(f"- seed={seed}\n")
        (job / "summary.json").write_text('{"metric": "acc", "metr')
    with pytest.raises(SystemExit) as exited:
        options_command("ebt.analysis.tools.collect", [f"dirs={tmp_path / 'grid'}"])
    assert exited.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "2 job folders (with .hydra/) found" in errors[0] and "none could be read" in errors[0]


# ------------------------------------------------------------------------------ 8. text files in another encoding
def read_text_unit(path: Path, **options) -> list[str]:
    return list(DocumentReader("text", 0.05, path.parent / "scratch", **options).read(Unit(path, "text", path.name)))


def test_a_latin1_or_binary_text_file_is_refused_unless_its_encoding_is_given(tmp_path):
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("Déjà vu: café, crème brûlée, garçon, naïve.\n".encode("latin-1") * 50)
    binary = tmp_path / "random.bin"
    binary.write_bytes(np.random.default_rng(0).integers(0, 256, 20_000, dtype=np.uint8).tobytes())
    for path in (latin1, binary):
        with pytest.raises(DataError, match=rf"{path.name}: .* bytes .* are not valid utf-8.*data\.task\.encoding"):
            read_text_unit(path)
    (text,) = read_text_unit(latin1, encoding="latin-1")
    assert text.startswith("Déjà vu") and "\ufffd" not in text
    with pytest.raises(ConfigError, match="data.task.encoding='klingon'"):
        read_text_unit(latin1, encoding="klingon")
    mostly_fine = tmp_path / "one_bad_byte.txt"
    mostly_fine.write_bytes(b"x = 1\n" * 1000 + b"\xff")
    (text,) = read_text_unit(mostly_fine)
    assert text.count("\ufffd") == 1


def test_the_tokenized_text_task_takes_the_encoding_option(tmp_path):
    pytest.importorskip("tokenizers")
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("Déjà vu: café, crème brûlée, garçon, naïve.\n".encode("latin-1") * 200)
    base = ["data=tokenized_text", f"data.task.path={latin1}", "data.task.vocab_size=300", "data.task.seq_len=8",
            f"data.task.cache_dir={tmp_path / 'cache'}", "model.dim=16", "model.backbone.n_layers=1"]
    from ebt.training.build import build_task

    with pytest.raises(DataError, match="latin1.txt: .* not valid utf-8"):
        build_task(compose_config(base, tmp_path / "a"))
    task = build_task(compose_config([*base, "data.task.encoding=latin-1"], tmp_path / "b"))
    assert "\ufffd" not in task.decode(task.encode("café"))


# --------------------------------------------------------------------------- 9. eval next to a loose checkpoint
def test_eval_of_a_loose_checkpoint_writes_next_to_it(trained, tmp_path):
    downloads = tmp_path / "Downloads"
    downloads.mkdir()
    shutil.copy(trained["ckpt"], downloads / "x.ckpt")
    evaluate(OmegaConf.merge(OmegaConf.load(ROOT / "configs" / "eval.yaml"),
                             {"ckpt": str(downloads / "x.ckpt"), "eval_batches": 1}))
    assert (downloads / "x-eval" / "eval.csv").is_file()
    assert not (tmp_path / "eval").exists(), "nothing is written two folders up"


def test_a_few_stray_bytes_in_a_corpus_file_are_read_with_a_note(tmp_path, capsys):
    """The standard library (the default corpus) holds Latin-1 test modules with a handful of non-UTF-8 bytes."""
    from ebt.tasks.text_sources import decode_text

    raw = b'test = "Les hommes ont oubli\xe9 cette v\xe9rit\xe9"\n'
    assert decode_text(raw, "utf-8", "module.py") == 'test = "Les hommes ont oubli\ufffd cette v\ufffdrit\ufffd"\n'
    assert "module.py: 3 bytes that are not valid utf-8 read as U+FFFD" in capsys.readouterr().err
