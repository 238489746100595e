"""Results tables of docs/ from their committed CSVs: ``python scripts/doc_tables.py [check=true]``.

Rewrites every ``<!-- table:NAME -->`` ... ``<!-- /table:NAME -->`` block registered in
:data:`ebt.analysis.doc_tables.REGISTRY` from its CSVs; ``check=true`` writes nothing and exits 1 naming each block
that differs. Markers, registry and how to add a table: :mod:`ebt.analysis.doc_tables`.
"""

from ebt.commands import options_command

if __name__ == "__main__":
    options_command("ebt.analysis.doc_tables")
