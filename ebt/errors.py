"""Errors a user can act on. Entry points print them as one line (set HYDRA_FULL_ERROR=1 for a traceback)."""


class UserError(Exception):
    """Bad input: the message names the problem and the fix."""


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
