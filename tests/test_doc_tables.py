"""The results tables of docs/ are what their scripts write from the committed CSVs (``scripts/doc_tables.py``)."""

import shutil

import pytest

from ebt.analysis import doc_tables
from ebt.analysis.doc_tables import REGISTRY, DocTable, block, fill, fill_doc, markers, stale, write_all
from ebt.errors import ConfigError
from ebt.options import read_options
from tests.utils import ROOT


@pytest.mark.parametrize("table", REGISTRY, ids=[f"{t.doc}:{t.name}" for t in REGISTRY])
def test_every_committed_table_equals_its_render_from_the_committed_csv(table):
    assert all(c.startswith("docs/") and (ROOT / c).is_file() for c in table.csvs), table.csvs
    committed = block((ROOT / table.doc).read_text(), table.name, source=table.doc).strip("\n")
    assert committed == table.text(ROOT), (f"{table.doc}: {markers(table.name)[0]} differs from its render of "
                                           f"{', '.join(table.csvs)}; run python scripts/doc_tables.py")


def test_registry_names_each_block_once():
    keys = [(t.doc, t.name) for t in REGISTRY]
    assert len(keys) == len(set(keys))


DOC = """# Title

Some prose with a number 1.0.

<!-- table:a -->
| old | table |
|---|---|
| 1 | 2 |
<!-- /table:a -->

Between the tables.

<!-- table:b -->
<!-- /table:b -->

Tail prose.
"""


def test_fill_replaces_exactly_the_blocks():
    out = fill(DOC, {"a": "| new |\n|---|\n| 3 |\n", "b": "text b"})
    assert out == DOC.replace("| old | table |\n|---|---|\n| 1 | 2 |\n", "| new |\n|---|\n| 3 |\n").replace(
        "<!-- table:b -->\n", "<!-- table:b -->\ntext b\n")
    assert fill(out, {"a": "| new |\n|---|\n| 3 |", "b": "text b"}) == out  # idempotent
    assert fill(DOC, {"a": "x"}).split("<!-- /table:a -->")[1] == DOC.split("<!-- /table:a -->")[1]  # b untouched


def test_fill_with_another_marker_family_and_a_prefix():
    text = "<!-- policy_eval:run1-results -->\nold\n<!-- /policy_eval:run1-results -->\n"
    assert fill(text, {"results": "new"}, tag="policy_eval", prefix="run1") == text.replace("old", "new")
    assert fill(text, {"results": "new", "other": "x"}, tag="policy_eval", prefix="run1", missing_ok=True) == \
        text.replace("old", "new")


@pytest.mark.parametrize("text", ["no markers at all\n", "<!-- table:a -->\nopened, never closed\n",
                                  "<!-- table:a -->\n<!-- /table:a -->\n<!-- table:a -->\n<!-- /table:a -->\n"])
def test_a_missing_or_repeated_marker_is_a_one_line_error(tmp_path, text):
    path = tmp_path / "doc.md"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        fill_doc(path, {"a": "x"})
    message = str(error.value)
    assert "\n" not in message and "<!-- table:a -->" in message and str(path) in message
    assert path.read_text() == text  # nothing written


def test_missing_ok_still_refuses_a_doc_with_none_of_the_blocks(tmp_path):
    path = tmp_path / "doc.md"
    path.write_text(DOC)
    with pytest.raises(ConfigError, match="none of the blocks"):
        fill_doc(path, {"c": "x", "d": "y"}, missing_ok=True)


def test_write_all_and_check_on_a_copy(tmp_path):
    """The script's two modes on a copy of the registered docs: a hand edit is named by check=true and undone by a
    rewrite; a missing marker changes no file."""
    for t in REGISTRY:
        for rel in (t.doc, *t.csvs):
            (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ROOT / rel, tmp_path / rel)
    assert stale(tmp_path) == [] and write_all(tmp_path) == []
    first = REGISTRY[0]
    doc = tmp_path / first.doc
    committed = doc.read_text()
    body = block(committed, first.name)
    doc.write_text(committed.replace(body, body.replace("|---|", "|---|\n| typed | by hand |", 1)))
    assert stale(tmp_path) == [f"{first.doc}: {markers(first.name)[0]} differs from its render of "
                               f"{', '.join(first.csvs)}"]
    assert write_all(tmp_path) == [first.doc] and doc.read_text() == committed
    broken = DocTable(first.doc, "no_such_block", first.csvs, first.render)
    with pytest.raises(ConfigError, match="no_such_block"):
        write_all(tmp_path, (*REGISTRY, broken))
    assert doc.read_text() == committed


def test_main_check_passes_on_the_committed_docs(capsys):
    assert doc_tables.main(read_options(["check=true"], doc_tables.DEFAULTS)) == 0
    assert "up to date" in capsys.readouterr().out
