"""The EBT authors' reference implementation, loaded for :mod:`ebt.benchmarks.reference`
(``scripts/bench_reference.py``), and this repo's rows built at the same size.

The reference is github.com/alexiglad/EBT at commit :data:`REFERENCE_COMMIT`, imported from a checkout the user
names (``reference=DIR``); none of its code is copied here. Its NLP EBT (``model/nlp/ebt.py``, ``EBT_NLP``) and
its baseline transformer (``model/nlp/baseline_transformer.py``) are built from a namespace of its own
``train_model.py`` argparse defaults (read from that file's syntax tree, not executed), with the size and the
pretraining recipe of its ``job_scripts/nlp/pretrain/ebt_s1.sh`` on top (:data:`RECIPE`). Its heavy imports that
the NLP model never calls (``torchvision``, ``diffusers``, ``transformers`` when not installed) are replaced by stub
modules for the import only, and its tokenizer by a stand-in of the benchmark's vocabulary size (no download).

One reference step = ``forward_loss_wrapper(batch, phase="train")`` + ``backward`` + ``zero_grad``;
:func:`check_reference_second_order` counts the ``torch.autograd.grad(..., create_graph=True)`` calls of one step
(the thinking steps it differentiates through) and the energy transformer's forward calls.
"""

import argparse
import ast
import contextlib
import hashlib
import importlib
import sys
import time
import types
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from ebt.errors import ConfigError, UserError
from ebt.tasks.base import Task
from ebt.training.build import build_objective
from ebt.training.config import compose_train

REFERENCE_URL = "https://github.com/alexiglad/EBT"
REFERENCE_COMMIT = "0ad36281cc1040136973270073af20c544249224"
# git blob ids of the files the benchmark uses, at REFERENCE_COMMIT (another commit still runs, with a warning)
REFERENCE_BLOBS = {
    "model/nlp/ebt.py": "9e525d4917ccbefd22e6d439369f39810d2cf072",
    "model/nlp/baseline_transformer.py": "af57d770352990aabb4b74069b0c2e89c3c13bd8",
    "model/ar_ebt_time_embed.py": "fd9547845861c7f3cd74d9f02a02966297b83fd4",
    "model/ar_transformer.py": "aa38661f3545a8b875f35a07c1070c315af7c5a9",
    "model/model_utils.py": "289369b1139b9edbcd8217a1fca570714a6f7943",
    "train_model.py": "2704eebefb952b4650689c29c2f137a30ca0d7c7",
}
# the reference's NLP pretraining recipe (job_scripts/nlp/pretrain/ebt_s1.sh) minus data/optimiser/logging keys, with
# every source of randomness in a training step off (no alpha jitter, no Langevin noise, no replay, fixed steps)
RECIPE: dict[str, Any] = {
    "modality": "NLP", "model_name": "ebt", "execution_mode": "pretrain", "tokenizer": "EleutherAI/gpt-neox-20b",
    "normalize_initial_condition": True, "ebt_type": "time_embed", "denoising_initial_condition": "random_noise",
    "mcmc_step_size_learnable": True, "mcmc_step_size": 500.0, "mcmc_step_size_lr_multiplier": 1500.0,
    "randomize_mcmc_step_size_scale": 1, "langevin_dynamics_noise": 0.0, "mcmc_replay_buffer": False,
    "randomize_mcmc_num_steps": 0, "truncate_mcmc": False, "no_mcmc_detach": False, "contrastive_loss": False,
}
STUBBED = ("torchvision", "torchvision.transforms", "torchvision.transforms.functional", "torchvision.models",
           "torchvision.utils", "diffusers", "transformers")
REFERENCE_MODULES = ("model.nlp.ebt", "model.nlp.baseline_transformer", "model.ar_ebt_default",
                     "model.ar_ebt_time_embed", "model.ar_ebt_adaln", "model.ar_transformer")
EBT_BASE = ["model/objective=ebt", "model.objective.alpha_jitter=1"]
DEFAULT_OURS = {"predict": ["model/objective=predict"], "ebt": [], "ebt_func": ["model.objective.thinking_grad=func"]}


# --------------------------------------------------------------------------------------------------- arguments
def split_overrides(text: str) -> list[str]:
    """``a=1,b=[2,3]`` -> ``["a=1", "b=[2,3]"]`` (commas inside brackets or braces stay)."""
    out, depth, current = [], 0, ""
    for char in text:
        depth += (char in "[{(") - (char in "]})")
        if char == "," and depth == 0:
            out.append(current)
            current = ""
        else:
            current += char
    return [o.strip() for o in [*out, current] if o.strip()]


def parse_ours(extra: Mapping[str, Any]) -> dict[str, list[str]]:
    """The rows of this repo: the defaults (:data:`DEFAULT_OURS`) and each extra ``NAME: overrides`` (the option
    ``ours.NAME=override1,override2,...`` or ``ours.NAME=[override1,override2]``)."""
    if not isinstance(extra, Mapping):
        raise ConfigError(f"ours={extra}: rows are named, ours.NAME=override1,override2,... (e.g. "
                          f"ours.ebt_emb=model.objective.candidate=embedding)")
    rows = {name: list(overrides) for name, overrides in DEFAULT_OURS.items()}
    for name, given in extra.items():
        spec = f"ours.{name}={given}"
        if isinstance(given, Mapping) or not name.replace("_", "").replace("-", "").isalnum():
            raise ConfigError(f"{spec!r}: expected ours.NAME=override1,override2,... (e.g. "
                              f"ours.ebt_emb=model.objective.candidate=embedding)")
        if name in rows or name.startswith("ref_"):
            raise ConfigError(f"{spec!r}: the row name {name!r} is taken (rows: {sorted(rows)}; ref_* are the "
                              f"reference's)")
        overrides = split_overrides(given) if isinstance(given, str) else [str(o).strip() for o in given or []]
        if not overrides or any("=" not in o for o in overrides):
            raise ConfigError(f"{spec!r}: every override must be KEY=VALUE")
        rows[name] = overrides
    return rows


def parse_ref_set(values: Mapping[str, Any]) -> dict[str, Any]:
    """Reference hyperparameters (the option ``ref_set.KEY=VALUE``; values in the command line's grammar: ``null``,
    ``true``, numbers, strings)."""
    if not isinstance(values, Mapping):
        raise ConfigError(f"ref_set={values}: set each one as ref_set.KEY=VALUE (a reference train_model.py option)")
    for key, value in values.items():
        if not key.isidentifier() or isinstance(value, Mapping):
            raise ConfigError(f"ref_set.{key}={value}: expected ref_set.KEY=VALUE (a reference train_model.py option)")
    return dict(values)


# --------------------------------------------------------------------------------------------------- the checkout
def git_blob_id(path: Path) -> str:
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def check_reference(root: str | Path | None) -> tuple[Path, list[str]]:
    """The checkout's path and the files that differ from :data:`REFERENCE_COMMIT`; ConfigError when ``root`` is
    not given, missing, or not a checkout of the reference repository."""
    hint = f"(git clone {REFERENCE_URL} && git -C EBT checkout {REFERENCE_COMMIT[:8]})"
    if root is None:
        raise ConfigError(f"reference=DIR is required: a checkout of {REFERENCE_URL} at {REFERENCE_COMMIT[:8]} "
                          f"{hint}")
    path = Path(root).expanduser().resolve()
    if not path.is_dir():
        raise ConfigError(f"reference={root}: no such directory; expected a checkout of {REFERENCE_URL} {hint}")
    missing = [name for name in REFERENCE_BLOBS if not (path / name).is_file()]
    if missing or "class EBT_NLP" not in (path / "model/nlp/ebt.py").read_text(errors="replace"):
        raise ConfigError(f"reference={root} is not a checkout of {REFERENCE_URL} (missing: "
                          f"{', '.join(missing) or 'class EBT_NLP in model/nlp/ebt.py'}) {hint}")
    return path, [name for name, blob in REFERENCE_BLOBS.items() if git_blob_id(path / name) != blob]


def reference_defaults(root: Path) -> dict[str, Any]:
    """Every ``parser.add_argument`` default of the reference's ``train_model.py`` (read from its syntax tree;
    a default that is not a literal reads as None)."""
    tree = ast.parse((root / "train_model.py").read_text())
    out: dict[str, Any] = {}
    for node in ast.walk(tree):
        func = getattr(node, "func", None)
        if not (isinstance(node, ast.Call) and isinstance(func, ast.Attribute) and func.attr == "add_argument"):
            continue
        flags = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
        keywords = {k.arg: k.value for k in node.keywords if k.arg}
        dest = _literal(keywords["dest"]) if "dest" in keywords else next(
            (f.lstrip("-").replace("-", "_") for f in flags if f.startswith("--")), None)
        if dest is None:
            continue
        action = _literal(keywords["action"]) if "action" in keywords else None
        if "default" in keywords:
            out[dest] = _literal(keywords["default"])
        else:
            out[dest] = {"store_true": False, "store_false": True}.get(action)
    return out


def _literal(node: ast.AST) -> Any:
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError):
        return None


def reference_hparams(root: Path, *, dim: int, layers: int, heads: int, seq: int, batch: int, steps: int,
                      extra: dict[str, Any] | None = None) -> argparse.Namespace:
    """The reference's hyperparameters: its argparse defaults, :data:`RECIPE`, this size, then ``extra`` (ConfigError
    for a key that is not a reference option)."""
    defaults = reference_defaults(root)
    unknown = sorted(set(extra or {}) - set(defaults))
    if unknown:
        raise ConfigError(f"ref_set.{', ref_set.'.join(unknown)}: not an option of the reference's train_model.py")
    values = defaults | RECIPE | {
        "model_size": "", "embedding_dim": dim, "num_transformer_blocks": layers, "multiheaded_attention_heads": heads,
        "context_length": seq, "batch_size_per_device": batch, "mcmc_num_steps": steps} | (extra or {})
    return argparse.Namespace(**values)


# --------------------------------------------------------------------------------------------------- importing it
class _Stub(types.ModuleType):
    """A module the reference imports but its NLP models never use: any attribute is a placeholder that raises."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        module = self.__name__

        class Placeholder:
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                raise RuntimeError(f"{module}.{name} is stubbed by ebt.benchmarks.reference_checkout (not installed)")

        Placeholder.__name__ = name
        return Placeholder


def _importable(name: str) -> bool:
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


@contextlib.contextmanager
def reference_imports(root: Path) -> Iterator[list[str]]:
    """The reference's root on ``sys.path`` and stub modules for what is not installed (yields their names); both
    are removed afterwards (the imported reference modules stay in ``sys.modules`` as ``model.*``)."""
    loaded = sys.modules.get("model")
    if loaded is not None and Path(getattr(loaded, "__file__", "") or "").resolve().parent.parent != root:
        raise ConfigError(f"another top-level package 'model' is already imported ({loaded.__file__}); "
                          f"cannot import the reference's from {root}")
    stubs = [name for name in STUBBED if name.split(".")[0] not in sys.modules and not _importable(name.split(".")[0])]
    for name in stubs:
        sys.modules[name] = _Stub(name)
        parent, _, child = name.rpartition(".")
        if parent in stubs:
            setattr(sys.modules[parent], child, sys.modules[name])
    sys.path.insert(0, str(root))
    try:
        yield stubs
    finally:
        sys.path.remove(str(root))
        for name in stubs:
            sys.modules.pop(name, None)


class _Tokenizer:
    """Stands in for the reference's Hugging Face tokenizer: only its length and ``eos_token_id`` (0) are used."""

    def __init__(self, vocab_size: int) -> None:
        self.vocab_size, self.eos_token_id = vocab_size, 0

    def __len__(self) -> int:
        return self.vocab_size


def import_reference(root: Path, vocab_size: int) -> tuple[types.ModuleType, types.ModuleType, list[str]]:
    """``(model.nlp.ebt, model.nlp.baseline_transformer, stubbed module names)``, their tokenizer set to
    ``vocab_size`` tokens."""
    with reference_imports(root) as stubs:
        try:
            modules = [importlib.import_module(name) for name in REFERENCE_MODULES]
        except ImportError as error:
            raise ConfigError(f"cannot import the reference from {root}: {error} (pip install {error.name})") from error
    tokenizer = types.SimpleNamespace(from_pretrained=lambda *args, **kwargs: _Tokenizer(vocab_size))
    for module in modules[:2]:
        module.AutoTokenizer = tokenizer
    return modules[0], modules[1], stubs


# --------------------------------------------------------------------------------------------------- steps
def reference_batch(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The reference's batch (``input_ids`` of ``T + 1`` tokens) holding the same tokens as ``batch``."""
    return {"input_ids": torch.cat([batch["input_ids"], batch["targets"][:, -1:]], dim=1)}


def reference_step(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> Callable[[], None]:
    """One reference training step: its loss (``forward_loss_wrapper``, phase train), backward, zero_grad."""
    ref_batch = reference_batch(batch)

    def step() -> None:
        model.forward_loss_wrapper(ref_batch, phase="train")["loss"].backward()
        model.zero_grad(set_to_none=True)

    return step


@contextlib.contextmanager
def count_autograd_grad() -> Iterator[list[bool]]:
    """Records, per ``torch.autograd.grad`` call inside the block, whether it had ``create_graph=True``."""
    calls: list[bool] = []
    original = torch.autograd.grad

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(bool(kwargs.get("create_graph", False)))
        return original(*args, **kwargs)

    torch.autograd.grad = counting
    try:
        yield calls
    finally:
        torch.autograd.grad = original


def check_reference_second_order(model: torch.nn.Module, step: Callable[[], None], steps: int) -> dict[str, int]:
    """Run ``step`` once; ConfigError unless it took exactly ``steps`` second-order thinking steps (``autograd.grad``
    with ``create_graph=True``) and ``steps`` energy forwards. Returns the counts."""
    forwards = []
    handle = model.transformer.register_forward_hook(lambda *_: forwards.append(1))
    try:
        with count_autograd_grad() as calls:
            step()
    finally:
        handle.remove()
    counts = {"second_order_steps": sum(calls), "first_order_grads": len(calls) - sum(calls),
              "energy_forwards": len(forwards)}
    if counts["second_order_steps"] != steps or counts["first_order_grads"] or counts["energy_forwards"] != steps:
        raise ConfigError(f"the reference step did not take {steps} second-order steps: {counts}")
    return counts


def build_ours(overrides: list[str], task: Task, *, dim: int, layers: int, heads: int, steps: int) -> torch.nn.Module:
    """This repo's objective at this size: predictor rows take their overrides as given, every other row starts from
    :data:`EBT_BASE` with ``steps`` thinking steps, then its overrides."""
    size = [f"model.dim={dim}", f"model.backbone.n_layers={layers}", f"model.mixer.n_heads={heads}", "kernels=auto"]
    objective = [] if "model/objective=predict" in overrides else [*EBT_BASE, f"model.objective.steps={steps}"]
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        cfg = compose_train([*size, *objective, *overrides])
        return build_objective(cfg.model, task)
    except UserError:
        raise
    except (HydraException, OmegaConfBaseException) as error:
        raise ConfigError(f"overrides {overrides}: {error}") from error


def our_step(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> Callable[[], None]:
    """One training step of this repo's objective: loss, backward, zero_grad."""

    def step() -> None:
        loss, _ = model.loss(batch)
        loss.backward()
        model.zero_grad(set_to_none=True)

    return step


def cpu_timed(step: Callable[[], None], record: list[float]) -> Callable[[], None]:
    """``step`` that appends its process CPU time (ms, ``time.process_time``) to ``record`` at every call."""

    def timed() -> None:
        start = time.process_time()
        step()
        record.append((time.process_time() - start) * 1e3)

    return timed


def ffn_hidden(model: torch.nn.Module) -> int | None:
    """The hidden width of the first block's channel MLP (the output size of the first 2-D weight under a module
    named ``mlp``, ours, or ``feed_forward``, the reference's), or None when there is none."""
    for name, module in model.named_modules():
        if name.split(".")[-1] in ("mlp", "feed_forward"):
            weight = next((p for p in module.parameters() if p.dim() == 2), None)
            return None if weight is None else int(weight.shape[0])
    return None


def n_params(model: torch.nn.Module) -> int:
    """Trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
