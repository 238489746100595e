"""Environment checks that run before anything is built: problems of the machine, not of the config.

:func:`check_environment` raises :class:`~ebt.errors.EnvironmentSetupError` (a :class:`~ebt.errors.UserError`: one
``error:`` line, exit 2) for a W&B logger without credentials or offline mode (it would otherwise prompt for a key or
fail deep inside ``wandb.init``). The run folder's own checks (writable, locked, no results a fresh start would replace)
are :func:`ebt.training.run_folder.claim_run_folder`'s.
"""

import netrc
import os
from pathlib import Path
from urllib.parse import urlparse

from omegaconf import DictConfig

from ebt.errors import EnvironmentSetupError

WANDB_OFFLINE_MODES = {"offline", "disabled", "dryrun"}


def _wandb_loggers(cfg: DictConfig) -> list[DictConfig]:
    group = cfg.get("logger")
    if not isinstance(group, DictConfig):
        return []
    return [c for c in group.values()
            if isinstance(c, DictConfig) and str(c.get("_target_", "")).endswith("WandbLogger")]


def wandb_has_credentials(environ=os.environ) -> bool:
    """Whether W&B can find an API key: ``WANDB_API_KEY`` or the ``netrc`` entry that ``wandb login`` writes."""
    if environ.get("WANDB_API_KEY", "").strip():
        return True
    host = urlparse(environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname or "api.wandb.ai"
    path = Path(environ.get("NETRC") or Path.home() / ".netrc").expanduser()
    try:
        return path.is_file() and netrc.netrc(str(path)).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def check_wandb(cfg: DictConfig, environ=os.environ) -> None:
    """``logger=wandb`` needs offline mode (``WANDB_MODE=offline`` or ``logger.wandb.offline=true``) or a key."""
    online = [c for c in _wandb_loggers(cfg) if not c.get("offline", False)]
    if not online or environ.get("WANDB_MODE", "").strip().lower() in WANDB_OFFLINE_MODES:
        return
    if not wandb_has_credentials(environ):
        raise EnvironmentSetupError("logger=wandb has no W&B API key here: set WANDB_MODE=offline (logs locally; "
                                    "`wandb sync` them later) or run `wandb login` (or set WANDB_API_KEY)")


def check_environment(cfg: DictConfig, environ=os.environ) -> None:
    """Every environment check of a training run, before anything is built (see the module docstring)."""
    check_wandb(cfg, environ)
