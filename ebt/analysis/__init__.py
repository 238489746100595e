"""Analysis built on the trainer, one subpackage per job: ``thinking/`` (what thinking longer buys an EBT:
``scripts/think.py``, ``think_seeds.py``, ``ood_curve.py``), ``task_eval/`` (task-specific evaluations: ICL regression,
nav2d policies, world-model rollouts), ``tools/`` (evaluate, generate, collect a grid, grow a TokenFormer) and
``scaling/`` (scaling exponents of a grid: ``scripts/scaling.py``). The helpers they share stay here: ``stats``
(intervals), ``plotting`` (tables, CSV, figures), ``run_options`` (the checkpoint and evaluation options of the entry
points) and ``doc_tables`` (the results tables of docs/).
"""
