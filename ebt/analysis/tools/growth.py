"""TokenFormer progressive scaling of a trained checkpoint (Wang et al., 2024, Sec. 3.5).

``grow_checkpoint`` takes a Lightning checkpoint written by ``scripts/train.py``, rebuilds the model from the
config stored in it, appends ``n_new`` key/value parameter tokens to every Pattention
(:meth:`alt_arch.linears.pattention.Pattention.grow`: zero keys, so the function is unchanged), and returns a checkpoint
that ``scripts/train.py ckpt_path=...`` resumes from:

* ``state_dict`` holds the grown tensors (the ``scale`` buffers keep the pre-growth ``tau``);
* the stored config has ``model.linear.extra_slots`` / ``model.mlp.extra_slots`` raised by ``n_new``, so the
  model built from it has exactly the grown shapes (checked here);
* the AdamW moments of the grown tensors are padded with zeros (a new token starts with no history), step
  counts, the LR schedule, the loop counters and the RNG states are kept, so training continues where it stopped.

Command line (``scripts/grow.py``, ``key=value`` options; ``--help`` lists the defaults):
``python scripts/grow.py ckpt=PATH slots=+N [out=PATH] [seed=0]`` appends ``N`` zero-key parameter tokens to every
Pattention of a ``scripts/train.py`` checkpoint (the function is unchanged), writes the grown checkpoint (default:
``<ckpt>-grown<N>.ckpt`` next to it) and prints the exact overrides that continue training.
"""

import copy
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

import ebt.training.config  # noqa: F401  (registers ${uid:})
from alt_arch.linears.pattention import pattention_layers
from ebt.errors import CheckpointError, ConfigError
from ebt.options import integer
from ebt.training.build import build_lit_model
from ebt.training.checkpoint import check_compatible, load_checkpoint, save_checkpoint_file, stored_config
from ebt.training.lit_module import optimizer_groups
from ebt.training.restore import restore_lit_model

PATTENTION_TARGETS = {"linear": "alt_arch.linears.pattention.pattention",
                      "mlp": "alt_arch.linears.pattention.PattentionMLP"}


def grow_model(module: nn.Module, n_new: int, *, seed: int = 0) -> int:
    """Append ``n_new`` parameter tokens to every Pattention in ``module``; returns how many layers grew."""
    layers = pattention_layers(module)
    if not layers:
        raise ConfigError("the model has no Pattention layers to grow; train with experiment=tokenformer "
                          "(or model/linear=pattention, model/mlp=pattention)")
    generator = torch.Generator().manual_seed(seed)
    for _, layer in layers:
        layer.grow(n_new, generator=generator)
    return len(layers)


def grown_config(config: dict[str, Any], n_new: int) -> dict[str, Any]:
    """The stored config with ``extra_slots`` raised by ``n_new`` in every Pattention part."""
    config = copy.deepcopy(config)
    for group, target in PATTENTION_TARGETS.items():
        part = config["model"][group]
        if part.get("_target_") == target:
            part["extra_slots"] = int(part.get("extra_slots") or 0) + n_new
    return config


def _optimizer_param_names(lit: nn.Module, optim: dict[str, Any]) -> list[list[str]]:
    """Parameter names in the order AdamW indexes them (one list per parameter group)."""
    names = {id(p): n for n, p in lit.objective.named_parameters()}
    groups = optimizer_groups(lit.objective, optim["weight_decay"], optim["lr"])
    return [[names[id(p)] for p in g["params"]] for g in groups]


def _pad_optimizer_state(state: dict[str, Any], order: list[list[str]], new_shapes: dict[str, torch.Size],
                         path: str) -> dict[str, Any]:
    saved_sizes = [len(g["params"]) for g in state["param_groups"]]
    if saved_sizes != [len(g) for g in order]:
        raise CheckpointError(f"checkpoint {path}: its optimizer groups {saved_sizes} do not match the model's "
                              f"{[len(g) for g in order]}; it was not written by this trainer's AdamW")
    state = copy.deepcopy(state)
    flat = [name for group in order for name in group]
    index_of = {name: idx for group, saved in zip(order, state["param_groups"], strict=True)
                for name, idx in zip(group, saved["params"], strict=True)}
    for name in flat:
        per_param = state["state"].get(index_of[name])
        if not per_param or name not in new_shapes:
            continue
        for key, value in per_param.items():
            if torch.is_tensor(value) and value.ndim >= 1 and value.shape[1:] == new_shapes[name][1:]:
                pad = value.new_zeros((new_shapes[name][0] - value.shape[0], *value.shape[1:]))
                per_param[key] = torch.cat([value, pad])
    return state


def grow_checkpoint(checkpoint: dict[str, Any], n_new: int, *, seed: int = 0, path: str = "checkpoint"
                    ) -> dict[str, Any]:
    """A copy of a ``scripts/train.py`` checkpoint with ``n_new`` more parameter tokens in every Pattention."""
    if n_new < 1:
        raise ConfigError(f"slots must add at least one parameter token, got {n_new}")
    hparams = checkpoint.get("hyper_parameters") or {}
    cfg, task, lit = restore_lit_model(checkpoint, path)
    config = stored_config(checkpoint, path)  # with the current module paths
    order = _optimizer_param_names(lit, hparams.get("optim") or dict(cfg.optim))
    old_shapes = {n: p.shape for n, p in lit.objective.named_parameters()}
    grown = grow_model(lit.objective, n_new, seed=seed)
    new_shapes = {n: p.shape for n, p in lit.objective.named_parameters() if p.shape != old_shapes[n]}

    new_config = grown_config(config, n_new)
    fresh = build_lit_model(OmegaConf.create(new_config), task)
    try:
        check_compatible(lit.state_dict(), fresh, path)
    except CheckpointError as e:
        raise ConfigError(f"the grown model does not match its config; every Pattention must come from "
                          f"model/linear=pattention or model/mlp=pattention ({e})") from None

    out = dict(checkpoint)
    out["state_dict"] = lit.state_dict()
    out["hyper_parameters"] = {**hparams, "config": new_config}
    if checkpoint.get("optimizer_states"):
        out["optimizer_states"] = [_pad_optimizer_state(s, order, new_shapes, path)
                                   for s in checkpoint["optimizer_states"]]
    slots = {name: m.slots for name, m in pattention_layers(lit.objective)}
    out["growth"] = [*checkpoint.get("growth", []),
                     {"added": n_new, "layers": grown, "step": checkpoint.get("global_step"), "slots": slots}]
    return out


DEFAULTS = {"ckpt": None, "slots": None, "out": None, "seed": 0}  # the command's options
USAGE = "usage: python scripts/grow.py ckpt=PATH slots=+N [out=PATH] [seed=0]"


def slots_option(cfg: DictConfig) -> int:
    """``slots=+N`` (or ``N``): the number of parameter tokens to add; :class:`ConfigError` when not a number."""
    value = cfg.slots
    if isinstance(value, str) and value.lstrip("+").isdigit():
        value = int(value.lstrip("+"))
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"slots={cfg.slots!r} is not a number of parameter tokens to add; {USAGE}")
    return value


def main(cfg: DictConfig) -> None:
    """The ``scripts/grow.py`` command: grow a checkpoint, write it, print how to continue training."""
    if not cfg.ckpt or cfg.slots is None:
        raise ConfigError(f"ckpt= and slots= are required; {USAGE}")
    ckpt = Path(str(cfg.ckpt))
    n_new, seed = slots_option(cfg), integer(cfg, "seed", 0)
    out = Path(str(cfg.out)) if cfg.out else ckpt.with_name(f"{ckpt.stem}-grown{n_new}.ckpt")
    grown = grow_checkpoint(load_checkpoint(ckpt), n_new, seed=seed, path=str(ckpt))
    save_checkpoint_file(grown, out)  # fresh checksums: the weights and optimizer state changed
    info = grown["growth"][-1]
    model = grown["hyper_parameters"]["config"]["model"]
    overrides = [f"model.{g}.extra_slots={model[g]['extra_slots']}" for g in ("linear", "mlp")
                 if "extra_slots" in model[g]]
    print(f"grew {info['layers']} Pattention layers by {n_new} slots at step {info['step']} "
          f"(slots now {sorted(set(info['slots'].values()))})")
    print(f"wrote {out}")
    print("continue training with the run's overrides plus:\n  " + " ".join([*overrides, f"ckpt_path={out}",
                                                                        "trainer.max_steps=<total steps>"]))
