"""Closed-loop evaluation of nav2d policies: rollouts of trained checkpoints in the batched simulator.

Behind ``python scripts/policy_eval.py 'runs=[RUN,...]' out=DIR`` (``key=value`` options, below; ``--help`` lists the
defaults). Each run is a ``scripts/train.py`` run folder (or ``.ckpt``) on ``data=nav2d``; its objective's capability
says which policy it is: one pass (``Predict``, MSE behaviour cloning), sampling (``Diffusion``, DDPM / DDIM) or
thinking (``EBT``, EBT-Policy). Several runs of one kind (and one ``config`` label) are seeds: tables give the mean and
a 95 % t-interval over them (``mean ± h``: ``h = t_{0.975, n-1} s / sqrt(n)``, ``s`` the sample std of the ``n``
runs).

Options: ``runs`` (a list, or one run), ``out`` (the output folder; required), ``episodes`` (starts per split),
``splits``, ``ebt_steps``, ``best_of``, ``diffusion_steps``, ``samplers``, ``max_passes``, ``gate_min``, ``gate_max``,
``gate_best_of``, ``gate_quantiles`` (all below), ``execute`` (actions per plan; default: the run's
``data.task.execute``), ``seed`` (the rollouts' torch seed), ``config``, ``merge``, ``doc`` and ``doc_prefix`` (below).

Per policy setting and split (``val``: demo-like starts, where settings are chosen; ``test``: demo-like starts of
another stream, held out; ``ood``: starts off the demonstrated paths), over the same
``episodes`` starts (:meth:`ebt.tasks.nav2d.Nav2D.scenes`) and a fixed torch seed (rollouts are deterministic):
``success`` (goal reached without collision: the headline), ``collision``, ``timeout``, ``above`` (mode balance: the
fraction of successful episodes that passed the obstacle above; 0.5 = balanced), ``path_length`` (successful
episodes) and ``passes`` (compute: forward passes of the model per plan).

Settings: the predictor (1 pass); diffusion with ``diffusion_steps`` denoising passes for each sampler (``ddpm``,
``ddim``); the EBT with ``ebt_steps`` thinking steps and best-of-``N`` by final energy (``N S`` passes, ``+ N`` energy
evaluations when ``N > 1``: :func:`ebt.objectives.search.forward_passes`; a thinking step is one forward and its
backward to the candidate, counted as one pass as in ``scripts/think.py``). Settings above ``max_passes`` are skipped.

Energy as uncertainty (EBT runs): ``auroc_<states>_<S>``: the AUROC of the final energy (best-of-1, after ``S``
thinking steps: the trained count and every ``ebt_steps``) as a score for "this state is ``ood``", over the rollout
*start* states of ``val`` (negatives) and ``ood`` (positives) (``starts``), and over the demonstration states of the
offline batches (``make_batch``) of the two splits (``demos``).

Energy-gated policy: each plan thinks ``gate_min`` steps from one candidate (plus one energy evaluation of the result);
where that energy exceeds a threshold it plans again with best-of-``gate_best_of`` at ``gate_max`` steps. The
thresholds are quantiles ``gate_quantiles`` of the energies of every plan the cheap policy (``gate_min`` steps) makes
in rollouts from ``train`` starts (:func:`plan_energies`; neither evaluation split), so about ``1 - q`` of
in-distribution plans pay for the long plan. Its compute is the mean passes per plan over the plans of running
episodes, against always thinking the maximum (best-of-``gate_best_of`` at ``gate_max``) and always the minimum.

``'merge=[DIR,...]'`` adds the rows of earlier evaluations (their ``policy_eval.csv`` and ``.json``), so seeds and
policies can be evaluated in separate processes and tabulated together. ``config=NAME`` labels the rows of this
evaluation's runs (default: the policy kind), so several configurations of one kind (a tuning budget) stay apart.

Selection on ``val`` (:func:`select`), never on the splits it is reported on: per policy kind, its configuration is the
one whose best setting has the highest ``val`` success on the seed-0 run (the tuning runs: a configuration tried only
on seed 0 competes with the seed-0 run of the others), and its setting (steps, best-of-N, sampler, gate) the one with
the highest mean ``val`` success over that configuration's runs (ties: fewer passes). The selected settings are
reported on ``test`` and ``ood``.

Writes ``policy_eval.csv`` (one row per run, setting and split), ``policy_eval.json`` (EBT energy scores, parameter
counts, each run's offline metrics from its ``summary.json``), ``policy_summary.csv`` (mean, std and 95 % t-interval
half-width ``_ci95`` over runs), ``policy_selection.csv`` (the selection above), ``policy_eval.md`` (tables, parameter
counts, the command) and ``policy_curve.png`` (success vs forward passes per plan: EBT per best-of-N, diffusion per
sampler, the predictor as a flat line; one panel per split). ``doc=FILE`` also writes the tables into FILE, between
``<!-- policy_eval:NAME -->`` and ``<!-- /policy_eval:NAME -->`` lines (NAME: ``results``, ``selection``,
``tuning``, ``energy``, ``offline``; ``doc_prefix=P`` fills ``P-NAME``; blocks the file lacks are skipped,
:func:`ebt.analysis.doc_tables.fill_doc`), so a document's tables are the script's, never typed by hand.
"""

import csv
import json
import math
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from alt_arch.utils import num_params
from ebt.analysis.doc_tables import fill_doc
from ebt.analysis.plotting import markdown_table, pyplot, save_figure, write_csv, write_text
from ebt.analysis.stats import t_interval
from ebt.analysis.thinking.verifier import auroc
from ebt.errors import ConfigError
from ebt.objectives.base import Objective
from ebt.objectives.frozen import frozen
from ebt.objectives.search import forward_passes, think_best_of
from ebt.options import int_list, integer, listed, number, number_list, path_list
from ebt.tasks.nav2d import Nav2D
from ebt.tasks.nav2d_sim import OBS_DIM, observe, rollout

KINDS = {"thinks": "ebt", "samples": "diffusion", "one_pass": "predict"}  # capability -> policy kind


def policy_kind(objective: Objective) -> str:
    """``ebt`` (thinks), ``diffusion`` (samples) or ``predict`` (one pass), from the objective's declared capability."""
    for capability, kind in KINDS.items():
        if getattr(objective, capability, False):
            return kind
    raise ConfigError(f"policy_eval evaluates Predict, Diffusion and EBT policies, not {type(objective).__name__}")


def check_fits(objective: Objective, task: Nav2D, execute: int | None = None) -> int:
    """The actions executed per plan; a ConfigError when the task is not nav2d, its chunk length does not fit the
    model, or ``execute`` is out of range."""
    if not isinstance(task, Nav2D):
        raise ConfigError(f"policy_eval needs a nav2d run (data=nav2d); this one is {task.describe()}")
    encoder = getattr(objective.encoder, "base", objective.encoder)
    reads = getattr(encoder, "in_features", None)
    if reads is not None and reads != task.input_dim:
        raise ConfigError(f"a chunk of {task.horizon} actions does not fit the model: it reads chunks of "
                          f"{reads - OBS_DIM} (data.task.horizon={reads - OBS_DIM} when it was trained)")
    execute = task.execute if execute is None else execute
    if not 1 <= execute <= task.horizon:
        raise ConfigError(f"execute={execute} must be in [1, horizon={task.horizon}] (actions carried out per plan)")
    return execute


def _batch(task: Nav2D, obs: torch.Tensor, device: torch.device) -> dict[str, torch.Tensor]:
    inputs = task.tokens(obs.to(device))
    return {"inputs": inputs, "targets": torch.zeros(obs.shape[0], task.horizon, 2, device=device)}


@dataclass
class Setting:
    """One way of running a policy: its label parts and compute per plan."""

    kind: str
    mode: str  # predictor | ddpm | ddim | best_of | gated
    steps: int = 0
    best_of: int = 1
    passes: float = 1.0
    extra: dict[str, Any] = field(default_factory=dict)


class Planner:
    """A policy callable for :func:`ebt.tasks.nav2d_sim.rollout` (observations -> chunk) under one setting; counts
    the forward passes spent on running episodes (``on_plan`` marks which are running)."""

    def __init__(self, objective: Objective, task: Nav2D, setting: Setting, threshold: float | None = None) -> None:
        self.objective, self.task, self.setting, self.threshold = objective, task, setting, threshold
        self.device = next(objective.parameters()).device
        self.active = None
        self.passes, self.plans = 0.0, 0

    def on_plan(self, call: int, active: torch.Tensor) -> None:
        self.active = active

    def __call__(self, obs: torch.Tensor) -> torch.Tensor:
        batch, s = _batch(self.task, obs, self.device), self.setting
        running = int(self.active.sum()) if self.active is not None else obs.shape[0]
        self.plans += running
        if s.mode == "predictor":
            self.passes += running
            with torch.no_grad():
                return self.objective.predict(batch)
        if s.mode in ("ddpm", "ddim"):
            self.passes += running * s.steps
            return self.objective.sample(batch, steps=s.steps, sampler=s.mode)
        if s.mode == "best_of":
            self.passes += running * forward_passes(s.steps, s.best_of)
            return think_best_of(self.objective, batch, [s.steps], s.best_of)[s.steps]["prediction"]
        return self._gated(batch)

    def _gated(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        s, extra = self.setting, self.setting.extra
        low = think_best_of(self.objective, batch, [s.steps], 1)[s.steps]
        prediction, high = low["prediction"].clone(), low["sample_energy"] > self.threshold
        active = self.active if self.active is not None else torch.ones_like(high)
        self.passes += float(active.sum()) * (s.steps + 1)
        if bool(high.any()):
            sub = {k: v[high] for k, v in batch.items()}
            again = think_best_of(self.objective, sub, [extra["gate_max"]], extra["gate_best_of"])
            prediction[high] = again[extra["gate_max"]]["prediction"]
            self.passes += float((high & active.to(high.device)).sum()) * forward_passes(extra["gate_max"],
                                                                                       extra["gate_best_of"])
        return prediction


def run_episodes(objective: Objective, task: Nav2D, setting: Setting, split: str, episodes: int, *, seed: int = 0,
                 execute: int | None = None, threshold: float | None = None) -> dict[str, float]:
    """Roll ``setting`` out on ``episodes`` starts of ``split``; the metrics of the module docstring."""
    execute = check_fits(objective, task, execute)
    planner = Planner(objective, task, setting, threshold)
    torch.manual_seed(seed)
    with frozen(objective):
        out = rollout(task.scenes(split, 0, episodes), planner, task.world_for(split), execute=execute,
                      on_plan=planner.on_plan)
    success = out["success"]
    wins = int(success.sum())
    return {"success": float(success.double().mean()), "collision": float(out["collision"].double().mean()),
            "timeout": float(out["timeout"].double().mean()),
            "above": float((out["side"][success] > 0).double().mean()) if wins else math.nan,
            "path_length": float(out["path_length"][success].mean()) if wins else math.nan,
            "passes": planner.passes / max(planner.plans, 1), "plans": float(out["plans"].double().mean())}


def energies(ebt: Objective, task: Nav2D, inputs: torch.Tensor, steps: Sequence[int]) -> dict[int, torch.Tensor]:
    """Per-sample final energies (B,) after each of ``steps`` thinking steps (best-of-1, one trajectory) from the
    model's inputs (B, H, F)."""
    device = next(ebt.parameters()).device
    batch = {"inputs": inputs.to(device), "targets": torch.zeros(inputs.shape[0], task.horizon, 2, device=device)}
    with frozen(ebt):
        out = think_best_of(ebt, batch, sorted(set(steps)), 1)
    return {s: o["sample_energy"].cpu() for s, o in out.items()}


def energy_scores(ebt: Objective, task: Nav2D, episodes: int, steps: Sequence[int], *, seed: int = 0) -> dict[str, Any]:
    """Energy AUROC (val negative, ood positive) after each of ``steps`` thinking steps, on rollout start states
    (``auroc_starts_<S>``) and on offline demonstration states (``auroc_demos_<S>``), and the mean energies."""
    torch.manual_seed(seed)
    inputs = {"starts": {split: task.tokens(observe(task.scenes(split, 0, episodes), task.world_for(split)).float())
                         for split in ("val", "ood")},
              "demos": {split: task.make_batch(split, 0, episodes)["inputs"] for split in ("val", "ood")}}
    out: dict[str, Any] = {"mean_energy": {}}
    for states, pair in inputs.items():
        found = {split: energies(ebt, task, x, steps) for split, x in pair.items()}
        for s in sorted(set(steps)):
            val, ood = found["val"][s], found["ood"][s]
            out[f"auroc_{states}_{s}"] = auroc(torch.cat([val, ood]),
                                               torch.cat([torch.zeros(len(val)), torch.ones(len(ood))]))
            out["mean_energy"] |= {f"{states}_{split}_{s}": float(found[split][s].mean()) for split in found}
    return out


def plan_energies(ebt: Objective, task: Nav2D, steps: int, episodes: int, *, split: str = "train",
                  seed: int = 0) -> torch.Tensor:
    """The energies (after ``steps`` steps, best-of-1) of every plan of running episodes when that cheap policy is
    rolled out from ``split`` starts: the distribution the energy gate's thresholds are quantiles of."""
    recorded: list[torch.Tensor] = []
    state: dict[str, torch.Tensor] = {}
    device = next(ebt.parameters()).device

    def policy(obs: torch.Tensor) -> torch.Tensor:
        out = think_best_of(ebt, _batch(task, obs, device), [steps], 1)[steps]
        recorded.append(out["sample_energy"].cpu()[state["active"]])
        return out["prediction"]

    torch.manual_seed(seed)
    with frozen(ebt):
        rollout(task.scenes(split, 0, episodes), policy, task.world_for(split), execute=task.execute,
                on_plan=lambda call, active: state.__setitem__("active", active))
    return torch.cat(recorded)


@dataclass
class Options:
    episodes: int = 200
    splits: Sequence[str] = ("val", "test", "ood")
    ebt_steps: Sequence[int] = (1, 2, 4, 8, 16)
    best_of: Sequence[int] = (1, 4, 16)
    diffusion_steps: Sequence[int] = (1, 2, 5, 10, 20, 50, 100)
    samplers: Sequence[str] = ("ddpm", "ddim")
    max_passes: float = 128.0
    gate_min: int = 2
    gate_max: int = 8
    gate_best_of: int = 4
    gate_quantiles: Sequence[float] = (0.5, 0.8, 0.95)
    execute: int | None = None
    seed: int = 0
    config: str | None = None  # the label of these runs' configuration (default: the policy kind)


DEFAULTS = {"runs": [], "merge": [], "out": None,  # the command's options: Options' fields between the paths
            **{k: list(v) if isinstance(v, tuple) else v for k, v in asdict(Options()).items()},
            "doc": None, "doc_prefix": ""}


def settings_for(objective: Objective, options: Options) -> list[Setting]:
    """The settings evaluated for one policy (the gated ones are added separately: they need thresholds)."""
    kind = policy_kind(objective)
    if kind == "predict":
        return [Setting(kind, "predictor")]
    if kind == "diffusion":
        steps = [s for s in options.diffusion_steps if 1 <= s <= objective.train_timesteps]
        return [Setting(kind, m, s, 1, float(s)) for m in options.samplers for s in steps if s <= options.max_passes]
    out = []
    for n in options.best_of:
        for s in options.ebt_steps:
            passes = forward_passes(s, n)
            if passes <= options.max_passes:
                out.append(Setting(kind, "best_of", s, n, passes))
    return out


def evaluate_policy(objective: Objective, task: Nav2D, options: Options, run: str = "",
                    progress: Callable[[str], None] | None = None,
                    seed: int | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rows (one per setting and split) and, for an EBT, its energy scores; ``seed``: the run's training seed."""
    rows, info = [], {}
    settings = settings_for(objective, options)
    thresholds: dict[float, float] = {}
    if objective.thinks:
        info = energy_scores(objective, task, options.episodes, sorted({objective.steps, *options.ebt_steps}),
                             seed=options.seed)
        calibration = plan_energies(objective, task, options.gate_min, options.episodes, seed=options.seed)
        thresholds = {q: float(torch.quantile(calibration, q)) for q in options.gate_quantiles}
        extra = {"gate_max": options.gate_max, "gate_best_of": options.gate_best_of}
        settings += [Setting("ebt", "gated", options.gate_min, 1, math.nan, {**extra, "quantile": q})
                     for q in options.gate_quantiles]
    for setting in settings:
        for split in options.splits:
            started = time.time()
            threshold = thresholds.get(setting.extra.get("quantile", -1.0))
            metrics = run_episodes(objective, task, setting, split, options.episodes, seed=options.seed,
                                   execute=options.execute, threshold=threshold)
            rows.append({"run": run, "seed": math.nan if seed is None else seed,
                         "config": options.config or setting.kind, "policy": setting.kind, "mode": setting.mode,
                         "steps": setting.steps,
                         "best_of": setting.best_of, "gate_quantile": setting.extra.get("quantile", math.nan),
                         "split": split, **metrics, "seconds": round(time.time() - started, 2)})
            if progress is not None:
                progress(f"{run} {setting.kind} {setting.mode} steps={setting.steps} N={setting.best_of} {split}: "
                         f"success {metrics['success']:.3f} ({rows[-1]['seconds']} s)")
    return rows, info


KEYS = ("config", "policy", "mode", "steps", "best_of", "gate_quantile", "split")
VALUES = ("success", "collision", "timeout", "above", "path_length", "passes")
SELECTION_SPLIT = "val"  # settings and configurations are chosen on it; reported on the others
REPORT_SPLITS = ("test", "ood")
DOC_TAG = "policy_eval"  # doc= blocks: <!-- policy_eval:NAME --> ... <!-- /policy_eval:NAME -->


def _key(row: dict[str, Any]) -> tuple:
    return tuple("" if isinstance(row[k], float) and math.isnan(row[k]) else row[k] for k in KEYS)


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean, sample std and 95 % t-interval half-width (over runs) of every value per setting and split, in
    first-seen order."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(_key(r), []).append(r)
    out = []
    for key, mine in groups.items():
        row: dict[str, Any] = dict(zip(KEYS, key, strict=True)) | {"runs": len(mine)}
        for name in VALUES:
            finite = [r[name] for r in mine if math.isfinite(r[name])]
            row[name] = statistics.fmean(finite) if finite else math.nan
            row[f"{name}_std"] = statistics.stdev(finite) if len(finite) > 1 else math.nan
            row[f"{name}_ci95"] = t_interval(finite)
        out.append(row)
    return out


def _pm(row: dict[str, Any], name: str, digits: int = 3) -> str:
    mean, half = row[name], row.get(f"{name}_ci95", math.nan)
    if not math.isfinite(mean):
        return "n/a"
    return f"{mean:.{digits}f}" + (f" ± {half:.{digits}f}" if math.isfinite(half) else "")


def _label(row: dict[str, Any]) -> str:
    if row["mode"] == "predictor":
        label = "MSE predictor"
    elif row["mode"] in ("ddpm", "ddim"):
        label = f"diffusion {row['mode'].upper()}, {_steps(row['steps'])}"
    elif row["mode"] == "gated":
        label = f"EBT gated (q={row['gate_quantile']:g})"
    else:
        label = f"EBT {_steps(row['steps'])}, best-of-{row['best_of']}"
    return label if row.get("config", row["policy"]) == row["policy"] else f"{label} [{row['config']}]"


def _steps(n: int) -> str:
    return f"{n} step" + ("s" if n != 1 else "")


INTERVAL_NOTE = "mean ± half-width of the 95 % t-interval over the runs (seeds); a value without ± is from one run"


def results_table(summary: list[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """One row per setting (label), ``<split> <value>`` columns (default: success, collision, above and path of every
    split)."""
    splits = list(dict.fromkeys(r["split"] for r in summary))
    table = []
    for label in dict.fromkeys(_label(r) for r in summary):
        mine = {r["split"]: r for r in summary if _label(r) == label}
        first = next(iter(mine.values()))
        row = {"policy": label, "runs": first["runs"], "passes / plan": _pm(first, "passes", 1)}
        for split in splits:
            if split in mine:
                r = mine[split]
                row |= {f"{split} success": _pm(r, "success"), f"{split} collision": _pm(r, "collision"),
                        f"{split} above": _pm(r, "above", 2), f"{split} path": _pm(r, "path_length", 2)}
        table.append(row)
    if not table:
        return "(no rows)"
    columns = ["policy", "runs", "passes / plan", *(columns or [c for c in table[0] if " " in c and c[0] != "p"])]
    return markdown_table(table, [c for c in dict.fromkeys(columns) if any(c in r for r in table)])


def _score_stats(scores: list[dict[str, Any]]) -> list[dict[str, Any]]:
    keys = [k for k in scores[0] if k.startswith("auroc_")] if scores else []
    out = []
    for k in keys:
        values = [s[k] for s in scores]
        half = t_interval(values)
        row = {"score": k, **{f"run {i}": f"{v:.3f}" for i, v in enumerate(values)},
               "mean": f"{statistics.fmean(values):.3f}" + (f" ± {half:.3f}" if math.isfinite(half) else "")}
        out.append(row)
    return out


def energy_table(info: dict[str, list[dict[str, Any]]]) -> str:
    rows = _score_stats(info.get("ebt", []))
    return markdown_table(rows, list(rows[0])) if rows else "(no EBT runs)"


OFFLINE = ("val/mode_mse", "val/bimodal_mode_mse", "val/mode_mse_mean", "ood/mode_mse", "ood/bimodal_mode_mse")


def offline_metrics(source: str | Path) -> dict[str, float]:
    """The final offline metrics (:data:`OFFLINE`, from the training run's ``summary.json``) of a run folder or its
    ``checkpoints/*.ckpt``; empty when there is no summary."""
    path = Path(source)
    folder = path if path.is_dir() else path.parent.parent if path.parent.name == "checkpoints" else path.parent
    summary = folder / "summary.json"
    if not summary.is_file():
        return {}
    metrics = json.loads(summary.read_text()).get("metrics", {})
    return {k: float(metrics[k]) for k in OFFLINE if k in metrics}


def offline_table(info: dict[str, list[dict[str, Any]]]) -> str:
    """Per configuration: mean ± 95 % t-interval over its runs of each offline metric (lower is better)."""
    groups: dict[str, list[dict[str, float]]] = {}
    for r in info.get("offline", []):
        groups.setdefault(r["config"], []).append(r["metrics"])
    rows = []
    for config, runs in groups.items():
        row: dict[str, Any] = {"configuration": config, "runs": len(runs)}
        for k in OFFLINE:
            values = [m[k] for m in runs if k in m]
            half = t_interval(values)
            row[k] = "" if not values else f"{statistics.fmean(values):.4f}" + (
                f" ± {half:.4f}" if math.isfinite(half) else "")
        rows.append(row)
    return markdown_table(rows, list(rows[0])) if rows else "(no training summaries)"


def markdown(summary: list[dict[str, Any]], info: dict[str, list[dict[str, Any]]], params: dict[str, int],
             command: str, selection: list[dict[str, Any]] | None = None) -> str:
    lines = [f"Command: `{command}`", "", "Parameters: " + ", ".join(f"{k} {v:,}" for k, v in params.items()), "",
             f"Values: {INTERVAL_NOTE}.", "", results_table(summary)]
    if selection:
        lines += ["", f"Selected on `{SELECTION_SPLIT}` (configuration on the seed-0 run, setting on the mean over "
                  "runs), reported on the other splits:", "", selection_table(selection)]
    if info.get("offline"):
        lines += ["", "Offline metrics at the end of training (`summary.json`; `mode_mse`: MSE to the nearer "
                  "collision-free noise-free mode chunk, `mode_mse_mean` the reference of predicting the mean of "
                  "the modes):", "", offline_table(info)]
    if info.get("ebt"):
        scores = info["ebt"]
        lines += ["", f"Energy AUROC, val (negative) vs ood (positive), {len(scores)} EBT run(s):", "",
                  energy_table(info)]
        lines += [f"mean energies, run {i}: " + ", ".join(f"{k} {v:.4g}" for k, v in s["mean_energy"].items())
                  for i, s in enumerate(scores)]
    return "\n".join(lines) + "\n"


def _better(a: dict[str, Any], b: dict[str, Any] | None) -> bool:
    """``a`` beats ``b``: higher success, then fewer passes."""
    return b is None or (a["success"], -a["passes"]) > (b["success"], -b["passes"])


def select(rows: list[dict[str, Any]], summary: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per policy kind: its configurations' seed-0 ``val`` success (best setting each), the configuration chosen,
    and that configuration's setting with the highest mean ``val`` success, with its mean ± 95 % t-interval on every
    split (module docstring). One row per (kind, configuration); ``chosen`` marks the selected one."""
    out = []
    for kind in dict.fromkeys(r["policy"] for r in rows):
        tuning: dict[str, dict[str, Any]] = {}
        for r in rows:
            seed = r.get("seed", math.nan)
            if r["policy"] == kind and r["split"] == SELECTION_SPLIT and seed == 0 and _better(r, tuning.get(
                    r["config"])):
                tuning[r["config"]] = r
        configs = list(dict.fromkeys(r["config"] for r in rows if r["policy"] == kind))
        best_config = max((c for c in configs if c in tuning), key=lambda c: (tuning[c]["success"],
                                                                               -tuning[c]["passes"]), default=None)
        if best_config is None and len(configs) == 1:  # one configuration (rows written before seeds): nothing to tune
            best_config = configs[0]
        for config in configs:
            chosen: dict[str, Any] | None = None
            for r in summary:
                if r["config"] == config and r["split"] == SELECTION_SPLIT and _better(r, chosen):
                    chosen = r
            row: dict[str, Any] = {"policy": kind, "config": config, "chosen": config == best_config,
                                   "seed0_val_success": tuning[config]["success"] if config in tuning else math.nan,
                                   "seed0_val_setting": _label(tuning[config]) if config in tuning else ""}
            if chosen is not None:
                row |= {"setting": _label(chosen), "mode": chosen["mode"], "steps": chosen["steps"],
                        "best_of": chosen["best_of"], "gate_quantile": chosen["gate_quantile"],
                        "runs": chosen["runs"], "passes": chosen["passes"]}
                same = [r for r in summary if _key(r)[:-1] == _key(chosen)[:-1]]
                for r in same:
                    for name in ("success", "collision"):
                        row[f"{r['split']}_{name}"] = r[name]
                        row[f"{r['split']}_{name}_ci95"] = r[f"{name}_ci95"]
            out.append(row)
    return out


def selection_table(selection: list[dict[str, Any]]) -> str:
    table = []
    for s in selection:
        row = {"policy": s["policy"], "configuration": s["config"] + (" (chosen)" if s["chosen"] else ""),
               "seed-0 val success (best setting)": "n/a" if not math.isfinite(s["seed0_val_success"]) else
               f"{s['seed0_val_success']:.3f} ({s['seed0_val_setting']})"}
        if s["chosen"] and "setting" in s:
            row |= {"setting chosen on val": s["setting"], "runs": s["runs"], "passes / plan": f"{s['passes']:.1f}"}
            for split in (SELECTION_SPLIT, *REPORT_SPLITS):
                if f"{split}_success" in s:
                    row[f"{split} success"] = _pm({"success": s[f"{split}_success"],
                                                   "success_ci95": s[f"{split}_success_ci95"]}, "success")
        table.append(row)
    columns = list(dict.fromkeys(c for r in table for c in r))
    return markdown_table(table, columns) if table else "(no rows)"


def tuning_table(selection: list[dict[str, Any]]) -> str:
    rows = [{"policy": s["policy"], "configuration": s["config"], "chosen": "yes" if s["chosen"] else "no",
             "seed-0 val success": "n/a" if not math.isfinite(s["seed0_val_success"]) else
             f"{s['seed0_val_success']:.3f}", "its best setting": s["seed0_val_setting"]} for s in selection]
    return markdown_table(rows, list(rows[0])) if rows else "(no rows)"


def plot(summary: list[dict[str, Any]], path: Path) -> None:
    """Success vs forward passes per plan, one panel per split (one curve per configuration and sampler / N)."""
    plt = pyplot()
    splits = list(dict.fromkeys(r["split"] for r in summary))
    fig, axes = plt.subplots(1, len(splits), figsize=(5.5 * len(splits), 4.0), squeeze=False)
    for ax, split in zip(axes[0], splits, strict=True):
        rows = [r for r in summary if r["split"] == split]
        curves: dict[str, list[dict[str, Any]]] = {}
        for r in rows:
            config = "" if r.get("config", r["policy"]) == r["policy"] else f" [{r['config']}]"
            if r["mode"] == "best_of":
                curves.setdefault(f"EBT best-of-{r['best_of']}{config}", []).append(r)
            elif r["mode"] in ("ddpm", "ddim"):
                curves.setdefault(f"diffusion {r['mode'].upper()}{config}", []).append(r)
        for name, points in curves.items():
            points.sort(key=lambda r: r["passes"])
            ax.errorbar([p["passes"] for p in points], [p["success"] for p in points],
                        yerr=[0.0 if not math.isfinite(p["success_ci95"]) else p["success_ci95"] for p in points],
                        marker="o", ms=3, capsize=2, label=name, linestyle="--" if "diffusion" in name else "-")
        gated = [r for r in rows if r["mode"] == "gated"]
        if gated:
            ax.scatter([r["passes"] for r in gated], [r["success"] for r in gated], marker="*", s=80, color="k",
                       label="EBT energy-gated", zorder=3)
        for r in rows:
            if r["mode"] == "predictor":
                ax.axhline(r["success"], color="gray", linestyle=":", label="MSE predictor (1 pass)")
        ax.set_xscale("log")
        ax.set_xlabel("forward passes per plan")
        ax.set_ylabel("success rate")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"nav2d, {split} starts")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    save_figure(fig, path)


def read_previous(folder: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The rows (``policy_eval.csv``) and extras (``policy_eval.json``: EBT energy scores, parameter counts) an
    earlier evaluation wrote to ``folder``, to merge with new runs."""
    table, extras = folder / "policy_eval.csv", folder / "policy_eval.json"
    if not (table.is_file() and extras.is_file()):
        raise ConfigError(f"merge={folder}: no policy_eval.csv and policy_eval.json there; pass an output folder "
                          "of scripts/policy_eval.py")
    with table.open(newline="") as f:
        rows = list(csv.DictReader(f))
    texts = ("run", "config", "policy", "mode", "split")
    for r in rows:
        for k, v in r.items():
            if k not in texts:
                r[k] = int(v) if k in ("steps", "best_of") else float(v) if v else math.nan
        r.setdefault("config", r["policy"])  # written before config=
        r.setdefault("seed", math.nan)
    return rows, json.loads(extras.read_text())


def policy_eval(runs: list[Path], out: Path, options: Options, command: str = "",
                merge: Sequence[Path] = (), doc: Path | None = None, doc_prefix: str = "") -> list[dict[str, Any]]:
    """Evaluate every run (plus the rows of earlier evaluations in ``merge``), write the outputs (module docstring) to
    ``out`` (and the tables into ``doc``); returns the summary rows."""
    from ebt.training.restore import load_run

    if not runs and not merge:
        raise ConfigError("no run given; pass runs=[RUN,...] (run folders of scripts/train.py on data=nav2d) or "
                          "merge=[DIR,...] (earlier evaluations)")
    if doc is not None and not doc.is_file():
        raise ConfigError(f"doc={doc}: no such file")
    rows, info, params = [], {"ebt": [], "offline": []}, {}
    for folder in merge:
        old_rows, extras = read_previous(folder)
        rows += old_rows
        info["ebt"] += extras.get("ebt", [])
        info["offline"] += extras.get("offline", [])
        params |= extras.get("params", {})
    for path in runs:
        run = load_run(path)
        objective, task = run.objective, run.task
        kind = policy_kind(objective)
        check_fits(objective, task, options.execute)
        params[options.config or kind] = num_params(objective)
        new, scores = evaluate_policy(objective, task, options, run=str(path),
                                      progress=lambda line: print(line, file=sys.stderr, flush=True),
                                      seed=run.config.get("seed"))
        rows += new
        offline = offline_metrics(path)
        if offline:
            info["offline"].append({"run": str(path), "config": options.config or kind, "metrics": offline})
        if scores:
            info["ebt"].append(scores | {"run": str(path), "config": options.config or kind})
    summary = summarize(rows)
    selection = select(rows, summary)
    write_csv(rows, out / "policy_eval.csv", lineterminator="\n")
    write_csv(summary, out / "policy_summary.csv", lineterminator="\n")
    write_csv(selection, out / "policy_selection.csv", lineterminator="\n")
    write_text(out / "policy_eval.json", json.dumps(info | {"params": params}, indent=1) + "\n")
    text = markdown(summary, info, params, command, selection)
    write_text(out / "policy_eval.md", text)
    plot(summary, out / "policy_curve.png")
    if doc is not None:
        main_configs = {s["config"] for s in selection if s["chosen"]}
        shown = [r for r in summary if r["config"] in main_configs]
        columns = [f"{split} {v}" for split in (SELECTION_SPLIT, *REPORT_SPLITS)
                   for v in (("success",) if split == SELECTION_SPLIT else ("success", "collision", "above"))]
        blocks = {"results": f"({INTERVAL_NOTE}; `{command}`)\n\n" + results_table(shown, columns),
                  "selection": selection_table(selection), "tuning": tuning_table(selection),
                  "energy": energy_table(info), "offline": offline_table(info)}
        fill_doc(doc, blocks, tag=DOC_TAG, prefix=doc_prefix, missing_ok=True)
    print(text)
    return summary


def main(cfg: DictConfig) -> int:
    """The ``scripts/policy_eval.py`` command (options: the module docstring): 0 when written."""
    if not cfg.out:
        raise ConfigError("out= is required: the output folder")
    options = Options(episodes=integer(cfg, "episodes", 1), splits=[str(s) for s in listed(cfg, "splits")],
                      ebt_steps=int_list(cfg, "ebt_steps"), best_of=int_list(cfg, "best_of"),
                      diffusion_steps=int_list(cfg, "diffusion_steps"),
                      samplers=[str(s) for s in listed(cfg, "samplers")],
                      max_passes=number(cfg, "max_passes"), gate_min=integer(cfg, "gate_min", 1),
                      gate_max=integer(cfg, "gate_max", 1), gate_best_of=integer(cfg, "gate_best_of", 1),
                      gate_quantiles=number_list(cfg, "gate_quantiles"),
                      execute=integer(cfg, "execute", 1, allow_none=True), seed=integer(cfg, "seed"),
                      config=None if cfg.config is None else str(cfg.config))
    _check(options)
    doc = Path(str(cfg.doc)) if cfg.doc else None
    policy_eval(path_list(cfg, "runs"), Path(str(cfg.out)), options,
                command="python scripts/policy_eval.py " + shlex.join(sys.argv[1:]), merge=path_list(cfg, "merge"),
                doc=doc, doc_prefix=str(cfg.doc_prefix or ""))
    return 0


def _check(o: Options) -> None:
    bad = [s for s in o.splits if s not in ("train", "val", "ood", "test")]
    if bad or not o.splits:
        problem = f"unknown split(s) {bad}" if bad else "no split given"
        raise ConfigError(f"splits={list(o.splits)}: {problem}; use val, test, ood (or train)")
    bad = [s for s in o.samplers if s not in ("ddpm", "ddim")]
    if bad:
        raise ConfigError(f"samplers={list(o.samplers)}: unknown sampler(s) {bad}; use ddpm, ddim")
    if any(not 0 <= q <= 1 for q in o.gate_quantiles):
        raise ConfigError(f"gate_quantiles={list(o.gate_quantiles)} must lie in [0, 1]")
