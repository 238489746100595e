"""scripts/bench_reference.py (:mod:`ebt.benchmarks.reference`): its options and errors; with the reference checkout at
hand (``EBT_REFERENCE=DIR``, a checkout of github.com/alexiglad/EBT at 0ad36281; skipped otherwise), a tiny
side-by-side run."""

import os
import sys
from pathlib import Path

import pytest
import torch

from ebt.benchmarks import reference
from ebt.benchmarks.reference_checkout import (
    DEFAULT_OURS,
    check_reference,
    check_reference_second_order,
    import_reference,
    parse_ours,
    parse_ref_set,
    reference_defaults,
    reference_hparams,
    reference_step,
    split_overrides,
)
from ebt.errors import ConfigError
from ebt.options import read_options
from tests.utils import run_cli

REFERENCE = os.environ.get("EBT_REFERENCE")
needs_reference = pytest.mark.skipif(not REFERENCE or not (Path(REFERENCE) / "model/nlp/ebt.py").is_file(),
                                     reason="set EBT_REFERENCE to a checkout of github.com/alexiglad/EBT at 0ad36281")


def read_args(*argv: str):
    return reference.read_args(read_options(list(argv), reference.DEFAULTS))


def test_ours_rows_are_the_defaults_plus_name_override_lists():
    assert split_overrides("a=1, b=[2,3],c={x: 1, y: 2}") == ["a=1", "b=[2,3]", "c={x: 1, y: 2}"]
    given = read_options(["ours.ebt_emb=model.objective.candidate=embedding,model.objective.steps=3",
                          "ours.ebt_3=[model.objective.steps=3]", "ref_set.mcmc_step_size=5", "ref_set.ebt_type=adaln"],
                         reference.DEFAULTS)
    rows = parse_ours(given.ours)
    assert list(rows) == [*DEFAULT_OURS, "ebt_emb", "ebt_3"]
    assert rows["ebt_emb"] == ["model.objective.candidate=embedding", "model.objective.steps=3"]
    assert rows["ebt_3"] == ["model.objective.steps=3"]
    assert parse_ref_set(given.ref_set) == {"mcmc_step_size": 5, "ebt_type": "adaln"}


@pytest.mark.parametrize(("spec", "message"), [("ours.x.y=a=1", "expected ours.NAME=override"),
                                               ("ours.ebt=a=1", "is taken"), ("ours.ref_x=a=1", "is taken"),
                                               ("ours.x=novalue", "KEY=VALUE"), ("ours.x=[]", "KEY=VALUE")])
def test_malformed_ours_is_a_config_error(spec, message):
    with pytest.raises(ConfigError, match=message):
        parse_ours(read_options([spec], reference.DEFAULTS).ours)


def test_reference_must_be_given_and_be_a_checkout(tmp_path):
    with pytest.raises(ConfigError, match="reference=DIR is required.*git clone"):
        read_args()
    with pytest.raises(ConfigError, match="no such directory"):
        read_args(f"reference={tmp_path / 'missing'}")
    with pytest.raises(ConfigError, match="is not a checkout of https://github.com/alexiglad/EBT"):
        read_args(f"reference={tmp_path}")
    with pytest.raises(ConfigError, match="steps=0: must be an integer >= 1"):
        read_args(f"reference={tmp_path}", "steps=0")


def test_entry_point_reports_a_missing_reference_in_one_line(tmp_path):
    result = run_cli("bench_reference.py", "preset=cpu", cwd=tmp_path)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1 and "reference=DIR is required" in errors[0], result.stderr


@pytest.fixture
def reference_modules():
    yield
    for name in [n for n in sys.modules if n == "model" or n.startswith("model.")]:
        del sys.modules[name]


@needs_reference
def test_reference_step_takes_two_second_order_steps(reference_modules):
    root, modified = check_reference(REFERENCE)
    assert modified == []
    defaults = reference_defaults(root)
    assert defaults["mcmc_num_steps"] == 2 and defaults["normalize_initial_condition"] is False
    ebt_module, _, _ = import_reference(root, vocab_size=64)
    hparams = reference_hparams(root, dim=32, layers=1, heads=2, seq=8, batch=2, steps=2)
    model = ebt_module.EBT_NLP(hparams)
    ids = torch.randint(0, 64, (2, 9))
    step = reference_step(model, {"input_ids": ids[:, :-1], "targets": ids[:, 1:]})
    assert check_reference_second_order(model, step, steps=2)["second_order_steps"] == 2
    with pytest.raises(ConfigError, match="did not take 3 second-order steps"):
        check_reference_second_order(model, step, steps=3)
    with pytest.raises(ConfigError, match="ref_set.mcmc_stepsize: not an option"):
        reference_hparams(root, dim=32, layers=1, heads=2, seq=8, batch=2, steps=2, extra={"mcmc_stepsize": 1})


@needs_reference
def test_tiny_side_by_side_run(reference_modules, tmp_path):
    rows = reference.main(read_options([f"reference={REFERENCE}", "dim=32", "layers=1", "heads=2", "seq=8", "vocab=64",
                                        "batch=2", "reps=1", f"out={tmp_path / 'ref.csv'}"], reference.DEFAULTS))
    assert [r["row"] for r in rows] == ["ref_ebt", "ref_predict", "ref_ebt_wide", "ref_predict_wide", *DEFAULT_OURS]
    assert rows[2]["ffn_hidden"] == rows[4]["ffn_hidden"] == 88 and rows[0]["ffn_hidden"] == 32
    assert rows[0]["x_ref_ebt"] == 1 and all(r["gflop"] > 0 and r["params"] > 0 for r in rows)
    assert (tmp_path / "ref.csv").read_text().count("\n") == len(rows) + 1
