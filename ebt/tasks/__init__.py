"""Tasks: data generated or read offline, each declaring its metric."""

from ebt.tasks.base import IGNORE_INDEX, Task

__all__ = ["IGNORE_INDEX", "Task"]
