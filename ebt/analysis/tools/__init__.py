"""General tools for any trained run: ``evaluate`` (``scripts/eval.py``: a checkpoint's metrics on any split),
``generate`` (``scripts/generate.py``: text from a language model), ``collect`` (``scripts/collect.py`` /
``ebt-collect``: tables and plots of an ablation grid) and ``growth`` (``scripts/grow.py``: TokenFormer progressive
scaling of a checkpoint).
"""
