"""Scaling studies: how a validation loss falls with parameters, depth, tokens seen or measured training FLOPs, per
objective, with bootstrap intervals over seeds (``scripts/scaling.py``, ``docs/scaling.md``).

``runs`` reads a grid's finished jobs into series (one per objective and size), ``fit`` fits ``L = a X^-b`` and
``L = a X^-b + c`` with paired bootstrap intervals and finds the compute frontier, ``report`` is the command (tables,
CSV, plots).
"""
