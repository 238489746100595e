"""Analysis tools built on the trainer: thinking evaluation and report (``scripts/think.py``), grid collection,
TokenFormer growth, ICL evaluation, plotting and benchmark helpers.
"""
