"""ebt/benchmarks/ and its thin scripts: key=value options checked in one line, ``--help``, the random-token workload.
(Each benchmark runs end to end at toy size in tests/test_gpu_check.py; bench_reference in test_reference_bench.py.)"""

import importlib
import re

import pytest
import torch

from ebt.errors import ConfigError
from ebt.options import plain_options, read_options, usage
from ebt.tasks.random_tokens import RandomTokens
from tests.utils import ROOT, run_cli

SCRIPTS = {"bench_ebt.py": "ebt.benchmarks.ebt_step", "bench_kernels.py": "ebt.benchmarks.kernels",
           "bench_memoryformer.py": "ebt.benchmarks.memoryformer", "bench_mixers.py": "ebt.benchmarks.mixers",
           "bench_reference.py": "ebt.benchmarks.reference", "gpu_check.py": "ebt.benchmarks.gpu_check",
           "bench_generate.py": "ebt.benchmarks.generation"}
DEFAULTS = {"sizes": [1, 2], "kind": "a", "flag": True, "reps": None}


def options(*argv: str, **checks):
    return plain_options(read_options(list(argv), DEFAULTS), **checks)


def test_options_are_plain_values_with_lists_choices_integers_and_flags_checked():
    args = options("sizes=3", "kind=b", lists=("sizes",), choices={"kind": ("a", "b")}, positive=("sizes", "reps"),
                   flags=("flag",))
    assert args.sizes == [3] and args.kind == "b" and args.flag is True and args.reps is None
    assert type(options("sizes=[4,5]").sizes) is list
    for argv, checks, message in [(["kind=c"], {"choices": {"kind": ("a", "b")}}, "kind=c: choose from a, b"),
                                  (["sizes=[1,0]"], {"positive": ("sizes",)}, "sizes=0: must be an integer >= 1"),
                                  (["reps=2.5"], {"positive": ("reps",)}, "reps=2.5: must be an integer >= 1"),
                                  (["flag=maybe"], {"flags": ("flag",)}, "flag=maybe: must be true or false")]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            options(*argv, **checks)


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_each_script_is_a_thin_options_command_of_its_module(script):
    text = (ROOT / "scripts" / script).read_text()
    assert len(text.splitlines()) <= 40 and f'options_command("{SCRIPTS[script]}"' in text
    module = importlib.import_module(SCRIPTS[script])
    assert callable(module.main) and all(f"  {key}=" in usage(module) for key in module.DEFAULTS)


def test_help_and_a_bad_option_from_the_command_line(tmp_path):
    result = run_cli("bench_mixers.py", "--help", cwd=tmp_path)
    assert result.returncode == 0 and "options (key=value; defaults shown):" in result.stdout
    assert "  cpu_max_len=4096" in result.stdout
    result = run_cli("bench_mixers.py", "--lengths", "256", cwd=tmp_path)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1 and "options are key=value" in errors[0], result.stderr
    result = run_cli("bench_kernels.py", "ops=[softmax_embed,nope]", cwd=tmp_path)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and errors == ["error: ops=nope: choose from softmax_embed, candidate_update"]


def test_random_tokens_are_seeded_by_the_batch_index():
    task = RandomTokens(vocab_size=11, seq=5)
    batch = task.make_batch("train", 3, 2)
    assert batch["input_ids"].shape == batch["targets"].shape == (2, 5)
    assert torch.equal(batch["input_ids"][:, 1:], batch["targets"][:, :-1]) and int(batch["targets"].max()) < 11
    assert torch.equal(task.make_batch("val", 3, 2)["targets"], batch["targets"])
    assert not torch.equal(task.make_batch("train", 4, 2)["targets"], batch["targets"])
