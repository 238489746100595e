"""What thinking longer buys a trained EBT: ``thinking_eval`` measures the metric against thinking compute (steps,
best-of-N, the adaptive stop) and ``verifier`` whether the final energy flags wrong samples; ``report`` is
``scripts/think.py`` (tables and plots of one run); ``selection`` chooses the setting on ``val`` and reads it on the
other splits; ``think_seeds`` (``scripts/think_seeds.py``) summarises several seeds' runs and ``ood_curve``
(``scripts/ood_curve.py``) relates the improvement to the distance from the training data.
"""
