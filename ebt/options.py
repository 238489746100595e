"""The key=value options of the scripts that compose no config (:func:`ebt.commands.options_command`), read once.

:func:`read_options` reads ``key=value`` arguments over a module's ``DEFAULTS`` (OmegaConf's dotlist grammar, as
Hydra's overrides: ``k=[1,2]``, ``k=null``); :func:`usage` is such a command's ``--help``. The typed reads
(:func:`listed`, :func:`path_list`, :func:`integer`, :func:`number`, :func:`int_list`, :func:`number_list`, and
:func:`plain_options` for a whole config) refuse a bad value in one line naming its key.
"""

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ebt.errors import ConfigError


def read_options(argv: list[str], defaults: Mapping[str, Any]) -> DictConfig:
    """``key=value`` arguments over ``defaults``; an argument that is not ``key=value`` or a key not in ``defaults``
    is a :class:`ConfigError` naming the valid keys (a ``--flag`` is told the ``key=value`` to write)."""
    loose = [a for a in argv if "=" not in a or a.startswith("-")]
    if loose:
        name = loose[0].lstrip("-").split("=")[0].replace("-", "_")
        example = f"{name}=VALUE" if name in defaults else f"{next(iter(defaults), 'key')}=..."
        raise ConfigError(f"{loose[0]!r}: options are key=value (write {example}); valid keys: {', '.join(defaults)}")
    try:
        given = OmegaConf.from_dotlist(argv)
    except OmegaConfBaseException as error:
        raise ConfigError(f"cannot read the options {argv}: {str(error).splitlines()[0]}") from None
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(unknown)}; valid keys: {', '.join(defaults)}")
    try:
        return OmegaConf.merge(OmegaConf.create(dict(defaults)), given)
    except OmegaConfBaseException as error:  # e.g. key.sub=1 where the default is a list
        raise ConfigError(f"cannot read the options {argv}: {str(error).splitlines()[0]}") from None


def usage(module: ModuleType) -> str:
    """A key=value command's ``--help``: its module docstring and its options with their defaults."""
    lines = [(module.__doc__ or "").strip(), "", "options (key=value; defaults shown):"]
    lines += [f"  {key}={_shown(value)}" for key, value in module.DEFAULTS.items()]
    return "\n".join(lines)


def _shown(value: Any) -> str:
    """A default as it is typed on the command line: ``null``, ``true``, ``[1,2]``."""
    if isinstance(value, list | tuple):
        return "[" + ",".join(_shown(v) for v in value) + "]"
    return json.dumps(value) if value is None or isinstance(value, bool) else str(value)


def _is_integer(value: Any, minimum: int | None = None) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and (minimum is None or value >= minimum)


def listed(cfg: DictConfig, key: str) -> list[Any]:
    """``cfg[key]`` as a list: ``key=[a,b]``, one value (``key=a``: a list of one) or null (empty)."""
    value = cfg.get(key)
    if value is None:
        return []
    if isinstance(value, ListConfig):
        return list(OmegaConf.to_container(value, resolve=True))
    if isinstance(value, DictConfig):
        raise ConfigError(f"{key}=: a list is written {key}=[a,b] (or one value, {key}=a)")
    return [value]


def path_list(cfg: DictConfig, key: str, what: str = "") -> list[Path]:
    """``cfg[key]`` as a list of paths; with ``what`` (e.g. ``"multirun folders"``) an empty list is an error that
    shows how to pass them."""
    paths = [Path(str(v)) for v in listed(cfg, key)]
    if what and not paths:
        raise ConfigError(f"{key}= is required: the {what}, e.g. {key}=[A,B] (or {key}=A)")
    return paths


def integer(cfg: DictConfig, key: str, minimum: int | None = None, allow_none: bool = False) -> int | None:
    """``cfg[key]``: an integer (>= ``minimum`` when given), or null where ``allow_none``."""
    value = cfg.get(key)
    if value is None and allow_none:
        return None
    if not _is_integer(value, minimum):
        bound = f" >= {minimum}" if minimum is not None else ""
        raise ConfigError(f"{key}={value} must be an integer{bound}" + (" (or null)" if allow_none else ""))
    return value


def number(cfg: DictConfig, key: str) -> float:
    """``cfg[key]``: a number."""
    value = cfg.get(key)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ConfigError(f"{key}={value} must be a number")
    return float(value)


def int_list(cfg: DictConfig, key: str, minimum: int = 1) -> list[int]:
    """``cfg[key]``: a non-empty list of integers >= ``minimum`` (one value: a list of one)."""
    values = listed(cfg, key)
    if not values or any(not _is_integer(v, minimum) for v in values):
        raise ConfigError(f"{key}={values} must be a non-empty list of integers >= {minimum}, e.g. {key}=[1,2,4]")
    return values


def number_list(cfg: DictConfig, key: str) -> list[float]:
    """``cfg[key]``: a non-empty list of numbers (one value: a list of one)."""
    values = listed(cfg, key)
    if not values or any(not isinstance(v, int | float) or isinstance(v, bool) for v in values):
        raise ConfigError(f"{key}={values} must be a non-empty list of numbers, e.g. {key}=[0.5,0.8]")
    return [float(v) for v in values]


def plain_options(cfg: DictConfig, *, lists: Iterable[str] = (), choices: Mapping[str, Sequence[Any]] | None = None,
                  positive: Iterable[str] = (), flags: Iterable[str] = ()) -> SimpleNamespace:
    """The options of ``cfg`` as a namespace of plain values: ``lists`` as lists (one value: a list of one; null
    stays None), every value of ``choices[key]`` one of those, ``positive`` integers >= 1 (each item of a list),
    ``flags`` true or false. None (an unset default) passes."""
    values = OmegaConf.to_container(cfg, resolve=True)
    for key in lists:
        values[key] = None if cfg.get(key) is None else listed(cfg, key)
    for key, allowed in (choices or {}).items():
        bad = [v for v in _items(values[key]) if v not in allowed]
        if bad:
            raise ConfigError(f"{key}={bad[0]}: choose from {', '.join(map(str, allowed))}")
    for key in positive:
        bad = [v for v in _items(values[key]) if not _is_integer(v, 1)]
        if bad:
            raise ConfigError(f"{key}={bad[0]}: must be an integer >= 1")
    for key in flags:
        if values[key] is not None and not isinstance(values[key], bool):
            raise ConfigError(f"{key}={values[key]}: must be true or false")
    return SimpleNamespace(**values)


def _items(value: Any) -> list[Any]:
    """A value or a list of values as a list (None: none)."""
    return [] if value is None else list(value) if isinstance(value, list | tuple) else [value]
