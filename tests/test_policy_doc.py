"""docs/ebt_policy.md's tables are what ``policy_eval.py merge=[...] doc=...`` writes from the committed files in
docs/ebt_policy/ (issue: tables in docs are written by the scripts, never typed)."""

import re
import shutil

import pytest

from ebt.analysis.task_eval.policy_eval import Options, policy_eval
from tests.utils import ROOT

DOC = ROOT / "docs" / "ebt_policy.md"


@pytest.mark.parametrize("folder,prefix", [("docs/ebt_policy", ""), ("docs/ebt_policy/plain_ebt", "plain")])
def test_the_committed_policy_tables_are_the_scripts_output(tmp_path, folder, prefix):
    text = DOC.read_text()
    (command,) = {c for c in re.findall(r"`(python scripts/policy_eval\.py '?merge=[^`]*)`", text)
                  if f" out={folder} " in c + " "}
    doc = tmp_path / "ebt_policy.md"
    shutil.copy(DOC, doc)
    policy_eval([], tmp_path / "out", Options(), command=command, merge=[ROOT / folder], doc=doc, doc_prefix=prefix)
    assert doc.read_text() == text
