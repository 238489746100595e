"""Task-specific evaluations of trained checkpoints, each behind one script: ``icl_eval`` (``scripts/icl_eval.py``:
in-context regression error against the number of examples, with the classical baselines), ``policy_eval``
(``scripts/policy_eval.py``: closed-loop nav2d policies in the simulator) and ``rollouts`` (``scripts/rollout.py``:
autoregressive bouncing-ball world-model rollouts).
"""
