"""Config validation: every key and value of a composed config is checked before anything is built.

Keys: a key that the ``_target_``'s signature does not take (``model.mixer.n_head``), or an unknown key of ``model`` /
``data`` / ``optim``, is a :class:`ConfigError` naming the full key and the valid ones, instead of a ``TypeError`` from
deep inside a partial. Unknown *top-level* keys (``+sed=1``) too: the valid ones are read from configs/train.yaml (its
keys and the config groups), not listed here.

Values (:func:`check_config`): the type against the constructor's type hint (each ``_target_``'s signature,
``LitModel`` for ``optim``, ``TaskDataModule`` for ``data``, Lightning's ``Trainer`` for ``trainer``; ``int``,
``float``, ``bool``, ``str``, ``Literal``, lists, tuples, optionals and unions), the top-level scalars against the type
of their default, and ranges by the hand rules in :data:`RANGES` (plus: an integer part or task option ``n_*`` is a
count >= 1, NaN is never a value, ``model.dim`` splits into the heads). A wrong value is a :class:`ConfigError` naming
the full key, what it must be and the value given.

``optim`` takes only the optimiser's own keys (``lr``, ``weight_decay``, ...); ``on_nan`` and
``max_consecutive_skips`` are top-level keys (``on_nan=skip_batch``), and ``optim.on_nan`` is refused with that hint.
"""

import difflib
import functools
import inspect
import math
import types
import typing
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path, PurePath

from hydra.utils import get_object
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ebt.errors import ConfigError
from ebt.objectives.compiled import COMPILE_CHOICES
from ebt.training.data import TaskDataModule
from ebt.training.lit_module import LitModel
from ebt_kernels.dispatch import CHOICES as KERNEL_CHOICES

HYDRA_KEYS = {"_target_", "_partial_", "_recursive_", "_convert_", "_args_"}
INJECTED = {"self", "dim", "causal", "mixer", "mlp", "linear", "spatial_shape", "task", "backbone", "objective",
            "config"}  # arguments the builders pass themselves: not listed as options
MODEL_KEYS = {"mixer", "linear", "mlp", "backbone", "objective", "dim"}
DATA_KEYS = {"task", "batch_size", "eval_batches", "eval_batch_size", "overfit_batches"}
TOP_LEVEL_TRAINING_KEYS = {"on_nan", "max_consecutive_skips"}  # LitModel arguments set at the config's top level


def _full_key(node: DictConfig, key: str) -> str:
    path = node._get_full_key(None)
    return f"{path}.{key}" if path else key


def _reject(node: DictConfig, unknown: list[str], valid: list[str], owner: str) -> None:
    key = unknown[0]
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f" (did you mean {_full_key(node, close[0])}?)" if close else ""
    shown = ", ".join(valid[:40]) + (f", ... ({len(valid) - 40} more)" if len(valid) > 40 else "")
    raise ConfigError(f"{_full_key(node, key)} is not an option of {owner}{hint}; valid keys: {shown or 'none'}; "
                      "fix the spelling or drop the override")


def config_nodes(config) -> Iterator[tuple[DictConfig, typing.Any]]:
    """Every dict node of ``config`` (recursively, through lists; depth first) with the object its ``_target_`` names:
    ``None`` when it has none or that cannot be imported (Hydra reports an unknown target itself)."""
    if isinstance(config, ListConfig):
        for i in range(len(config)):
            yield from config_nodes(config._get_node(i))
        return
    if not isinstance(config, DictConfig) or config._is_none() or config._is_missing():
        return
    target = None
    if "_target_" in config and not OmegaConf.is_interpolation(config, "_target_"):
        try:
            target = get_object(str(config._get_node("_target_")._value()))
        except (ImportError, ValueError, TypeError, AttributeError):
            target = None
    yield config, target
    for key in config:
        yield from config_nodes(config._get_node(key))


def check_keys(config) -> None:
    """Raise :class:`ConfigError` for the first key of ``config`` (recursively) that its ``_target_`` does not take."""
    for node, target in config_nodes(config):
        try:
            params = options_signature(target).parameters.values() if target is not None else None
        except (ValueError, TypeError):
            params = None
        if params is None or any(p.kind is p.VAR_KEYWORD for p in params):
            continue
        names = [p.name for p in params if p.kind is not p.VAR_POSITIONAL]
        unknown = [k for k in node if k not in HYDRA_KEYS and k not in names]
        if unknown:
            _reject(node, unknown, [n for n in names if n not in INJECTED], str(node._get_node("_target_")._value()))


# ------------------------------------------------------------------------------------------ value types and ranges
# Types come from the constructors' type hints (every ``_target_`` node, the optimiser = LitModel, the data module),
# the top-level keys' types from their defaults in configs/train.yaml; the ranges below are the hand rules that a type
# hint cannot express. Checked before anything is built, so a bad value is one line naming the full key.
NONE_TYPE = type(None)
SEQUENCES = (list, tuple, Sequence, Iterable)


SEED_MAX = 2**32 - 1


def _positive(v) -> bool:
    return v >= 1


RANGES: dict[str, tuple[Callable[[typing.Any], bool], str]] = {  # full key -> (valid?, what is valid)
    "optim.lr": (lambda v: math.isfinite(v) and v > 0, "a finite number > 0"),
    "optim.weight_decay": (lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0"),
    "optim.warmup_steps": (lambda v: v >= 0, "an integer >= 0 (optimizer steps of linear warm-up)"),
    "optim.min_lr_ratio": (lambda v: 0 <= v <= 1, "a number in [0, 1]"),
    "optim.schedule_steps": (lambda v: v is None or v >= 1, "an integer >= 1 (or null)"),
    "optim.betas": (lambda v: len(v) == 2 and all(0 <= b < 1 for b in v), "two numbers in [0, 1)"),
    "data.batch_size": (_positive, "an integer >= 1"),
    "data.eval_batches": (_positive, "an integer >= 1"),
    "data.eval_batch_size": (lambda v: v is None or v >= 1, "an integer >= 1 (or null: data.batch_size)"),
    "data.overfit_batches": (lambda v: v >= 0, "an integer >= 0 (0: off)"),
    "model.dim": (_positive, "an integer >= 1"),
    "trainer.max_steps": (lambda v: v == -1 or v >= 1, "an integer >= 1 (or -1: no limit)"),
    "trainer.val_check_interval": (
        lambda v: v is None or not isinstance(v, int | float) or (v >= 1 if isinstance(v, int) else 0 < v <= 1),
        "an integer >= 1 (training batches) or a fraction in (0, 1]"),
    "trainer.accumulate_grad_batches": (_positive, "an integer >= 1"),
    "trainer.log_every_n_steps": (lambda v: v is None or v >= 1, "an integer >= 1"),
    "trainer.check_val_every_n_epoch": (lambda v: v is None or v >= 1, "an integer >= 1 (or null)"),
    "trainer.gradient_clip_val": (lambda v: v is None or (math.isfinite(v) and v >= 0), "a number >= 0 (or null)"),
    "max_consecutive_skips": (lambda v: v >= 0, "an integer >= 0"),
    "seed": (lambda v: 0 <= v <= SEED_MAX, f"an integer in [0, {SEED_MAX}] (what numpy accepts)"),
}
COUNT_PREFIX = "n_"  # a part's or task's integer option ``n_*`` (n_layers, n_heads, n_digits, ...) counts: >= 1
TOP_LEVEL_HINTS = {"kernels": typing.Literal[KERNEL_CHOICES],  # (its default is an interpolation)
                   "compile": typing.Literal[COMPILE_CHOICES],
                   "float32_matmul_precision": typing.Literal["highest", "high", "medium"]}


def options_signature(target) -> inspect.Signature:
    """The options a ``_target_`` takes: its ``options_signature()`` when it declares one (the EBT: the flat keys of
    :class:`ebt.objectives.config.EBTConfig`, with their types), else its call signature."""
    declared = getattr(target, "options_signature", None)
    return declared() if callable(declared) else inspect.signature(target)


@functools.cache
def _hints(obj) -> dict[str, typing.Any]:
    """Parameter name -> type hint of a callable (a class: its ``__init__``, or its declared
    :func:`options_signature`); a hint that does not evaluate is left out."""
    if callable(getattr(obj, "options_signature", None)):
        return {p.name: p.annotation for p in obj.options_signature().parameters.values()
                if p.annotation is not inspect.Parameter.empty}
    fn = obj.__init__ if isinstance(obj, type) else obj
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001 - a forward reference that does not resolve: evaluate each hint on its own
        hints = {}
        try:
            params = inspect.signature(obj).parameters.values()
        except (ValueError, TypeError):
            return {}
        for p in params:
            if isinstance(p.annotation, str):
                try:
                    hints[p.name] = eval(p.annotation, getattr(fn, "__globals__", {}))  # noqa: S307
                except Exception:  # noqa: BLE001
                    continue
            elif p.annotation is not inspect.Parameter.empty:
                hints[p.name] = p.annotation
    hints.pop("return", None)
    return hints


def _fits(value, hint) -> bool | None:
    """Whether a config value fits a type hint; None when the hint is not checkable from a config value (a class
    hydra builds, a callable, ``Any``): such values are left to their constructor."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is NONE_TYPE or hint is None:
        return value is None
    if origin is typing.Union or origin is types.UnionType:
        results = [_fits(value, a) for a in args]
        return True if True in results else (None if None in results else False)
    if origin is typing.Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if origin is typing.Annotated:
        return _fits(value, args[0])
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if hint in (Path, PurePath):
        return isinstance(value, str)
    if (origin or hint) in SEQUENCES:
        if isinstance(value, DictConfig):
            return None
        if not isinstance(value, ListConfig | list | tuple):
            return False
        if (origin or hint) is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(value) != len(args):
                return False
            results = [_fits(v, a) for v, a in zip(value, args, strict=True)]
        else:
            results = [_fits(v, args[0]) for v in value] if args else []
        return False if False in results else (None if None in results else True)
    if (origin or hint) is dict:
        return isinstance(value, DictConfig | dict)
    return None


def _describe(hint) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union or origin is types.UnionType:
        literals = [v for a in args if typing.get_origin(a) is typing.Literal for v in typing.get_args(a)]
        parts = [_describe(a) for a in args if a is not NONE_TYPE and typing.get_origin(a) is not typing.Literal]
        parts = ([_describe(typing.Literal[tuple(dict.fromkeys(literals))])] if literals else []) + parts
        return " or ".join(parts) + (" or null" if NONE_TYPE in args else "")
    if origin is typing.Literal:
        return "one of " + ", ".join(str(a) for a in args)
    if origin is typing.Annotated:
        return _describe(args[0])
    if (origin or hint) in SEQUENCES:
        if (origin or hint) is tuple and args and args[-1] is not Ellipsis:
            return f"a list of {len(args)} values ({', '.join(_describe(a) for a in args)})"
        return f"a list of values, each {_describe(args[0])}" if args else "a list"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string", dict: "a mapping",
             NONE_TYPE: "null", Path: "a path", PurePath: "a path"}
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def _show(value) -> str:
    if isinstance(value, ListConfig | DictConfig):
        return str(OmegaConf.to_container(value, resolve=True))
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else repr(value)


def _kind(value) -> str:
    kinds = {bool: "true/false", int: "an integer", float: "a decimal number", str: "a string", NONE_TYPE: "null"}
    return kinds.get(type(value), "a list" if isinstance(value, ListConfig) else "a mapping")


def _value(node: DictConfig, key: str):
    """The resolved value of ``node.key``; ``...`` when it cannot be read yet (missing, or an unresolvable
    interpolation such as ``${hydra:...}`` outside a Hydra run): not checked."""
    try:
        if OmegaConf.is_missing(node, key):
            return ...
        return node[key]
    except OmegaConfBaseException:
        return ...


def _check_value(key: str, value, hint=None, name: str | None = None, source: str = "") -> None:
    """``key``'s value against its type hint (when there is one) and its range rule (when there is one);
    ``source``: the interpolation the value came from, named in the message (``${trainer.max_steps}``)."""
    if value is ... or (isinstance(value, DictConfig) and "_target_" in value):  # unreadable, or a part hydra builds
        return
    via = f" (from {source})" if source else ""
    if hint is not None and _fits(value, hint) is False:
        raise ConfigError(f"{key} must be {_describe(hint)}, got {_show(value)}{via} ({_kind(value)})")
    rule = RANGES.get(key)
    if rule is not None and value is not None and not isinstance(value, str) and not rule[0](value):
        raise ConfigError(f"{key}={_show(value)}{via} is out of range: it must be {rule[1]}")
    if (name or "").startswith(COUNT_PREFIX) and isinstance(value, int) and not isinstance(value, bool) and value < 1:
        raise ConfigError(f"{key}={value}{via} is out of range: it must be an integer >= 1 (a count)")
    if isinstance(value, float) and math.isnan(value):  # never a meaningful setting (and every comparison passes it)
        raise ConfigError(f"{key}=nan{via} is not a number; give a finite value")


def _source(node: DictConfig, key: str) -> str:
    """The interpolation ``node.key`` is set by (``${trainer.max_steps}``), or ``""``."""
    return str(node._get_node(key)._value()) if OmegaConf.is_interpolation(node, key) else ""


def check_values(config) -> None:
    """Every value of every ``_target_`` node (recursively) against its constructor's type hints and the ranges."""
    for node, target in config_nodes(config):
        try:
            hints = _hints(target) if target is not None else {}
        except (ValueError, TypeError, AttributeError):
            hints = {}
        for key in node:
            if key not in HYDRA_KEYS:
                _check_value(_full_key(node, key), _value(node, key), hints.get(key), name=key if hints else None,
                             source=_source(node, key))


@functools.cache
def _default_top_level() -> tuple[dict[str, typing.Any], frozenset[str]]:
    """The top-level keys of configs/train.yaml with their defaults, and every valid top-level key: those keys plus
    the config groups (folders of configs/, e.g. ``data`` or ``sweep``). Read from the files, so a key added to
    train.yaml is known here without a list to update."""
    from ebt.training.config import CONFIG_DIR

    raw = OmegaConf.load(CONFIG_DIR / "train.yaml")
    defaults = {k: raw._get_node(k)._value() for k in raw if k != "defaults" and not OmegaConf.is_interpolation(raw, k)
                and not isinstance(raw._get_node(k), DictConfig | ListConfig)}
    groups = {p.name for p in CONFIG_DIR.iterdir() if p.is_dir()}
    return defaults, frozenset({*raw.keys(), *groups} - {"defaults"})


def check_top_level(cfg: DictConfig) -> None:
    """Unknown top-level keys (``+sed=1``) and the types and ranges of the top-level scalars."""
    defaults, valid = _default_top_level()
    unknown = [k for k in cfg if k not in valid]
    if unknown:
        _reject(cfg, unknown, sorted(valid), "the training config (configs/train.yaml)")
    lit_hints = _hints(LitModel)
    for key in cfg:
        if isinstance(cfg._get_node(key), DictConfig):
            continue
        hint = TOP_LEVEL_HINTS.get(key) or (lit_hints.get(key) if key in TOP_LEVEL_TRAINING_KEYS else None)
        if hint is None and type(defaults.get(key)) in (bool, int, float):  # the type of its default (seed: 0)
            hint = type(defaults[key])
        _check_value(key, _value(cfg, key), hint, source=_source(cfg, key))


ENTRY_OPTIONS = {"seed": int, "trust_checkpoint": bool}  # options several entry points share (train, eval, think, ...)


def check_entry_options(cfg: DictConfig) -> None:
    """The type and range of the options every entry point shares (:data:`ENTRY_OPTIONS`) where ``cfg`` has them,
    before anything uses them (``seed=abc`` / ``seed=-1`` would be a traceback from Lightning or numpy)."""
    for key, hint in ENTRY_OPTIONS.items():
        if key in cfg:
            _check_value(key, _value(cfg, key), hint, source=_source(cfg, key))


def check_model_shapes(cfg: DictConfig) -> None:
    """Combinations a single value's type cannot catch: the width splits into the attention heads (evenly for RoPE)."""
    model = cfg.get("model")
    mixer = model.get("mixer") if isinstance(model, DictConfig) else None
    if not isinstance(mixer, DictConfig):
        return
    dim, heads = _value(model, "dim"), _value(mixer, "n_heads") if "n_heads" in mixer else ...
    if not (isinstance(dim, int) and isinstance(heads, int) and dim >= 1 and heads >= 1):
        return
    if dim % heads:
        raise ConfigError(f"model.dim={dim} is not divisible by model.mixer.n_heads={heads}; pick a width that is a "
                          f"multiple of the heads (e.g. model.dim={max(heads, dim - dim % heads)})")
    if "rope" in mixer and _value(mixer, "rope") is True and (dim // heads) % 2:
        raise ConfigError(f"model.dim={dim} / model.mixer.n_heads={heads} = {dim // heads}: RoPE needs an even head "
                          f"dimension; pick model.dim a multiple of {2 * heads} or set model.mixer.rope=false")


def check_config(cfg: DictConfig) -> None:
    """Check a composed config before anything is built; the first problem is a :class:`ConfigError`.

    Unknown keys at the top level, under ``model``, ``data``, ``optim`` and in every ``_target_`` node (trainer,
    callbacks and loggers included); the type of every value (from the constructors' type hints) and its range.
    """
    optim_keys = [n for n in inspect.signature(LitModel).parameters if n not in INJECTED | TOP_LEVEL_TRAINING_KEYS]
    optim = cfg.get("optim")
    if isinstance(optim, DictConfig):
        misplaced = [k for k in optim if k in TOP_LEVEL_TRAINING_KEYS]
        if misplaced:
            key = misplaced[0]
            raise ConfigError(f"optim.{key} is not an option of the optimiser: {key} is a top-level key; "
                              f"write {key}={optim[key]} instead of optim.{key}={optim[key]}")
    check_top_level(cfg)
    for name, valid, owner in (("model", MODEL_KEYS, "the model (parts and width)"),
                               ("data", DATA_KEYS, "a data config"), ("optim", optim_keys, "the optimiser")):
        node = cfg.get(name)
        if isinstance(node, DictConfig):
            unknown = [k for k in node if k not in valid]
            if unknown:
                _reject(node, unknown, sorted(valid), owner)
            check_keys(node)
    for name in ("trainer", "callbacks", "logger", "model", "data"):  # trainer first: optim reads trainer.max_steps
        if isinstance(cfg.get(name), DictConfig):
            check_keys(cfg[name])
            check_values(cfg[name])
    for name, hints in (("model", {"dim": int}), ("data", _hints(TaskDataModule)), ("optim", _hints(LitModel))):
        node = cfg.get(name)
        if isinstance(node, DictConfig):
            for key in node:
                _check_value(f"{name}.{key}", _value(node, key), hints.get(key), source=_source(node, key))
    check_model_shapes(cfg)
