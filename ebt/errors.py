"""Errors a user can act on. Entry points print them as one line (set HYDRA_FULL_ERROR=1 for a traceback).

:class:`UserError` is the one base class of every user-facing error of the project: it is defined in the lowest
layer (:mod:`ebt_kernels.errors`) so that the kernel backend's :class:`~ebt_kernels.dispatch.KernelBackendError` and the
parts' :class:`~alt_arch.errors.MixerCapabilityError` / :class:`~alt_arch.errors.PartOptionError` derive from it
too, and re-exported here: :data:`USER_ERRORS` catches them all, and :func:`report_user_error` prints one (every
entry point, through :func:`ebt.training.cli.run_reporting_errors`, and the run-folder guard of
:mod:`ebt.training.grid`).
"""

import os
import sys

from ebt_kernels.errors import UserError

__all__ = ["USER_ERRORS", "CheckpointError", "ConfigError", "DataError", "EnvironmentSetupError",
           "ThinkingDivergedError", "TrainingDivergedError", "UserError", "report_user_error"]

# every user-facing error derives from the one base class (ebt_kernels.errors.UserError): config, data, checkpoint,
# environment, and the parts' capability/option and the kernel backend's errors
USER_ERRORS = (UserError,)


def report_user_error(error: BaseException) -> None:
    """Print ``error: <message>`` and exit 2; with HYDRA_FULL_ERROR=1 return so the caller re-raises."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        return None
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)


class ConfigError(UserError, ValueError):
    """An option or a combination of options that cannot work."""


class DataError(UserError, ValueError):
    """Missing, empty or unusable data."""


class ThinkingDivergedError(UserError, FloatingPointError):
    """NaN/Inf energy or energy gradient while thinking."""


class TrainingDivergedError(UserError, FloatingPointError):
    """A non-finite training loss (or diverged thinking) at a training step, or too many skipped batches."""


class CheckpointError(UserError, RuntimeError):
    """A checkpoint that is missing, corrupt, or from an incompatible configuration."""


class EnvironmentSetupError(UserError, RuntimeError):
    """The machine, not the config: an unwritable output folder, a full disk, a logger without its credentials."""
