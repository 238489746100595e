"""Errors a user can act on. Entry points print them as one line (set HYDRA_FULL_ERROR=1 for a traceback).

:class:`UserError` is the one base class of every user-facing error of the project: it is defined in the lowest
layer (:mod:`ebt_kernels.errors`) so that the kernel backend's :class:`~ebt_kernels.dispatch.KernelBackendError` and the
parts' :class:`~alt_arch.errors.MixerCapabilityError` / :class:`~alt_arch.errors.PartOptionError` derive from it
too, and re-exported here: ``except ebt.errors.UserError`` (in :mod:`ebt.training.cli`) catches them all.
"""

from ebt_kernels.errors import UserError

__all__ = ["CheckpointError", "ConfigError", "DataError", "EnvironmentSetupError", "ThinkingDivergedError",
           "TrainingDivergedError", "UserError"]


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
