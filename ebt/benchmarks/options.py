"""A benchmark's ``key=value`` options (read by :func:`ebt.commands.options_command`) checked and made plain.

:func:`plain_options` turns the config into a namespace of plain Python values: list options accept one value
(``lengths=256``) or a list (``lengths=[256,512]``), choices and positive integers are checked, and a bad value is
one :class:`~ebt.errors.ConfigError` that names the key.
"""

from collections.abc import Iterable, Mapping, Sequence
from types import SimpleNamespace
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ebt.errors import ConfigError


def as_list(value: Any) -> list | None:
    """``value`` as a list: a list stays, one value becomes ``[value]``, None stays None."""
    if value is None or isinstance(value, list):
        return value
    return list(value) if isinstance(value, tuple) else [value]


def plain_options(cfg: DictConfig, *, lists: Iterable[str] = (), choices: Mapping[str, Sequence[Any]] | None = None,
                  positive: Iterable[str] = (), flags: Iterable[str] = ()) -> SimpleNamespace:
    """The options of ``cfg`` as a namespace: ``lists`` as lists, every value of ``choices[key]`` one of those,
    ``positive`` integers >= 1 (each item of a list), ``flags`` true or false. None (an unset default) passes."""
    values = OmegaConf.to_container(cfg, resolve=True)
    for key in lists:
        values[key] = as_list(values[key])
    for key, allowed in (choices or {}).items():
        bad = [v for v in as_list(values[key]) or [] if v not in allowed]
        if bad:
            raise ConfigError(f"{key}={bad[0]}: choose from {', '.join(map(str, allowed))}")
    for key in positive:
        bad = [v for v in as_list(values[key]) or [] if isinstance(v, bool) or not isinstance(v, int) or v < 1]
        if bad:
            raise ConfigError(f"{key}={bad[0]}: must be an integer >= 1")
    for key in flags:
        if values[key] is not None and not isinstance(values[key], bool):
            raise ConfigError(f"{key}={values[key]}: must be true or false")
    return SimpleNamespace(**values)
