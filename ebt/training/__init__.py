"""The trainer: one Lightning module for every objective, building from config, the data stream, checkpoints and
their restore, run folders, the summary, CLI error reporting and the Hydra grid callbacks. Never imports
:mod:`ebt.analysis`.
"""
