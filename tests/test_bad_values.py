"""Bad values get one clear line before anything runs.

Types come from the constructors' type hints and ranges from a few hand rules (``ebt.training.validation``),
so a wrong value is a :class:`ConfigError` naming the full key, what it must be and the value given, never a
traceback from deep inside the build or training. Most cases run in-process; a handful go through the real entry
points and assert exit status 2, exactly one ``error:`` line and no traceback.
"""

import pytest

from ebt.errors import ConfigError, EnvironmentSetupError, UserError
from ebt.training.build import build_datamodule, build_lit_model, build_task
from ebt.training.preflight import check_environment
from ebt.training.validation import check_config
from tests.utils import compose_config, run_cli

# (overrides, message): the message names the full key, what it must be and the value given
BAD_VALUES = {
    # silently accepted before
    "negative eval_steps": (["model/objective=ebt", "model.objective.eval_steps=-1"],
                            r"model\.objective\.eval_steps must be >= 0 .*got -1"),
    "negative warmup": (["optim.warmup_steps=-5"],
                        r"optim\.warmup_steps=-5 is out of range: it must be an integer >= 0"),
    "unknown top-level key": (["+sed=1"], r"sed is not an option of the training config .*\(did you mean seed\?\)"),
    "negative lr": (["optim.lr=-1"], r"optim\.lr=-1 is out of range: it must be a finite number > 0"),
    "nan lr": (["optim.lr=nan"], r"optim\.lr=nan is out of range: it must be a finite number > 0"),
    "zero val_check_interval": (["trainer.val_check_interval=0"],
                                r"trainer\.val_check_interval=0 is out of range: it must be an integer >= 1"),
    "seed not a number": (["seed=abc"], r"^seed must be an integer, got 'abc' \(a string\)$"),
    # tracebacks before
    "fractional batch size": (["data.batch_size=1.5"],
                              r"data\.batch_size must be an integer, got 1\.5 \(a decimal number\)"),
    "width not a number": (["model.dim=abc"], r"model\.dim must be an integer, got 'abc' \(a string\)"),
    "width not divisible by the heads": (["model.dim=30"],
                                         r"model\.dim=30 is not divisible by model\.mixer\.n_heads=4"),
    "odd head width with RoPE": (["model.dim=100"],
                                 r"model\.dim=100 / model\.mixer\.n_heads=4 = 25: RoPE needs an even"),
    "no layers": (["model.backbone.n_layers=0"], r"model\.backbone\.n_layers=0 is out of range: .*>= 1"),
    "no gradient accumulation": (["+trainer.accumulate_grad_batches=0"],
                                 r"trainer\.accumulate_grad_batches=0 is out of range: it must be an integer >= 1"),
    "unknown kernels backend": (["kernels=foo"], r"kernels must be one of auto, torch, triton, got 'foo'"),
    "thinking steps not a number": (["model/objective=ebt", "model.objective.steps=two"],
                                    r"model\.objective\.steps must be an integer, got 'two' \(a string\)"),
    "trainer precision": (["trainer.precision=33"], r"trainer\.precision must be one of 64, 32, 16, .*got 33"),
    "betas": (["optim.betas=[0.9]"], r"optim\.betas must be a list of 2 values .*got \[0\.9\]"),
    "bool option": (["model.mixer.rope=maybe"], r"model\.mixer\.rope must be true or false, got 'maybe'"),
    "nan anywhere": (["model/objective=ebt", "model.objective.alpha=nan"],
                     r"model\.objective\.alpha=nan is not a number"),
    # the error names the real cause
    "no digits": (["data.task.n_digits=0"], r"data\.task\.n_digits=0 is out of range"),
    "icl dims": (["data=icl_regression", "data.task.n_dims=0"], r"data\.task\.n_dims=0 is out of range"),
}

GOOD_VALUES = [  # values the checks must let through (an int where a float is expected, null, lists, fractions)
    ["optim.lr=1"], ["trainer.val_check_interval=0.5"], ["data.eval_batch_size=null"], ["model.objective.eval_steps=0"],
    ["model.objective.eval_steps=[1,3]"], ["kernels=torch"], ["model.dim=64", "model.mixer.n_heads=8"],
    ["trainer.precision=bf16-mixed"], ["optim.schedule_steps=null"], ["model/mixer=hyena"],
]


def _build(cfg):
    task = build_task(cfg)
    build_lit_model(cfg, task)
    build_datamodule(cfg, task)


@pytest.mark.parametrize("case", BAD_VALUES)
def test_bad_value_is_one_clear_line_naming_the_key(case, tmp_path):
    overrides, message = BAD_VALUES[case]
    with pytest.raises(ConfigError, match=message) as info:
        _build(compose_config(["model.dim=32", *overrides], tmp_path))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("overrides", GOOD_VALUES, ids=" ".join)
def test_good_values_pass_the_checks(overrides, tmp_path):
    check_config(compose_config(overrides, tmp_path))


def test_top_level_keys_come_from_the_config_files(tmp_path):
    """Every key of configs/train.yaml and every config group is valid at the top level without a list to update."""
    cfg = compose_config([], tmp_path)
    check_config(cfg)  # the default config itself (whatever top-level keys train.yaml has)
    with pytest.raises(ConfigError, match=r"valid keys: .*ckpt_path.*data.*seed.*sweep"):
        check_config(compose_config(["+not_a_key=1"], tmp_path))


# ------------------------------------------------------------------------------------------------ environment
def test_wandb_without_a_key_or_offline_mode_is_refused(tmp_path):
    cfg = compose_config(["logger=wandb"], tmp_path)
    no_key = {"HOME": str(tmp_path), "NETRC": str(tmp_path / "netrc")}
    with pytest.raises(EnvironmentSetupError, match=r"set WANDB_MODE=offline .* or run `wandb login`"):
        check_environment(cfg, no_key)
    check_environment(cfg, {**no_key, "WANDB_MODE": "offline"})
    check_environment(cfg, {**no_key, "WANDB_API_KEY": "x" * 40})
    (tmp_path / "netrc").write_text("machine api.wandb.ai\n  login user\n  password " + "x" * 40 + "\n")
    check_environment(cfg, no_key)  # the netrc entry `wandb login` writes
    check_environment(compose_config(["logger=wandb", "logger.wandb.offline=true"], tmp_path), {})
    check_environment(compose_config([], tmp_path), {})  # csv logger: nothing to check


def test_every_user_error_is_one_class():
    from alt_arch.errors import MixerCapabilityError, PartOptionError
    from ebt_kernels.dispatch import KernelBackendError

    for error in (MixerCapabilityError, PartOptionError, KernelBackendError, ConfigError, EnvironmentSetupError):
        assert issubclass(error, UserError)


# ------------------------------------------------------------------------------------------------ entry points
CLI_CASES = [  # (script, args, start of the error line)
    ("train.py", ["+sed=1"], "error: sed is not an option of the training config"),
    ("train.py", ["data.batch_size=1.5"], "error: data.batch_size must be an integer, got 1.5"),
    ("train.py", ["model.objective.steps=two"], "error: model.objective.steps must be an integer, got 'two'"),
    ("train.py", ["logger=wandb", "trainer.max_steps=1"], "error: logger=wandb has no W&B API key here"),
    ("grow.py", ["ckpt=x.ckpt", "slots=many"], "error: slots='many' is not a number"),
    ("icl_eval.py", ["ckpts=x.ckpt"], "error: unknown option(s) ckpts"),
]


@pytest.mark.parametrize(("script", "args", "message"), CLI_CASES, ids=[f"{c[0]} {' '.join(c[1])}" for c in CLI_CASES])
def test_entry_point_exits_2_with_one_error_line(script, args, message, tmp_path, monkeypatch):
    for name in ("WANDB_MODE", "WANDB_API_KEY"):  # no W&B key and no offline mode (and no netrc under HOME)
        monkeypatch.delenv(name, raising=False)
    env = {"HOME": str(tmp_path), "NETRC": str(tmp_path / "netrc")}
    run_dir = [f"hydra.run.dir={tmp_path}/run"] if script == "train.py" else []
    result = run_cli(script, *args, *run_dir, cwd=tmp_path, env=env)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(message), result.stderr[-2000:]
