"""The trainer: one Lightning module for every objective, building from config, the data stream, checkpoints and
their restore and export, run folders and resumes, the summary (provenance, FLOPs, progress output), CLI error
reporting and the Hydra grid callbacks. Never imports :mod:`ebt.analysis` nor :mod:`ebt.benchmarks`
(tests/test_layering.py).
"""
