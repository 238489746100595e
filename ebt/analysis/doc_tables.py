"""Results tables of ``docs/`` written from the committed CSVs behind them, never typed by hand.

A generated table sits between two marker lines of a markdown file::

    <!-- table:NAME -->
    ...written by scripts/doc_tables.py...
    <!-- /table:NAME -->

:func:`fill_doc` replaces the text between the markers of each named block (any marker family: ``tag="table"``
here, ``tag="policy_eval"`` for :mod:`ebt.analysis.task_eval.policy_eval`'s blocks). :data:`REGISTRY` lists every
generated table once: the doc, the block name, the committed CSV(s) under ``docs/`` and the renderer, which is the
producing script's own markdown function where it has one (``collect.group_markdown``, think_seeds' headline table) and,
for CSVs written by one-off drivers (the world-model tables), a renderer here. ``scripts/doc_tables.py`` rewrites every
registered block from its CSVs; ``python scripts/doc_tables.py check=true`` writes nothing and exits 1 naming each
block that differs (``tests/test_doc_tables.py`` runs the same check).

To add a table: commit its CSV under ``docs/``, put the two marker lines where the table goes, add a
:class:`DocTable` to :data:`REGISTRY` (a renderer takes one list of CSV rows per CSV, values as the CSV's strings, and
returns markdown) and run ``python scripts/doc_tables.py``.
"""

import csv
import functools
import math
import re
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from ebt.analysis.plotting import cell_float, markdown_table, write_text
from ebt.analysis.scaling.report import fits_table
from ebt.analysis.scaling.thinking import thinking_tables
from ebt.analysis.thinking import ood_curve
from ebt.analysis.thinking.goal import ablation_table, goal_table
from ebt.analysis.tools import collect
from ebt.errors import ConfigError, DataError

ROOT = Path(__file__).resolve().parents[2]  # the checkout: docs/ and its CSVs are not part of an installed package
TAG = "table"
DEFAULTS = {"check": False}  # scripts/doc_tables.py's one option: check=true writes nothing, names stale tables

Rows = list[dict[str, str]]


# ----- markers ----------------------------------------------------------------------------------------------------
def markers(name: str, tag: str = TAG) -> tuple[str, str]:
    """The opening and closing marker lines of block ``name``."""
    return f"<!-- {tag}:{name} -->", f"<!-- /{tag}:{name} -->"


def _pattern(name: str, tag: str) -> re.Pattern[str]:
    start, end = (re.escape(m) for m in markers(name, tag))
    return re.compile(rf"(^{start}[ \t]*\n)(.*?)(^{end}[ \t]*$)", re.S | re.M)


def block(text: str, name: str, *, tag: str = TAG, source: str = "text") -> str:
    """The text between the markers of block ``name`` (a ConfigError when it has none, or two)."""
    found = _pattern(name, tag).findall(text)
    if len(found) != 1:
        start, end = markers(name, tag)
        what = "no" if not found else f"{len(found)}"
        raise ConfigError(f"{source}: {what} {start} ... {end} block (each marker on a line of its own, once)")
    return found[0][1]


def fill(text: str, blocks: dict[str, str], *, tag: str = TAG, prefix: str = "", missing_ok: bool = False,
         source: str = "text") -> str:
    """``text`` with the body of each block ``NAME`` (``PREFIX-NAME`` with a prefix) replaced by ``blocks[NAME]``.

    A block whose markers are missing (or appear twice) is a one-line ConfigError naming the marker; with
    ``missing_ok`` such blocks are skipped, and only a text with none of them is an error."""
    missing = []
    for name, body in blocks.items():
        tagged = f"{prefix}-{name}" if prefix else name
        pattern = _pattern(tagged, tag)
        count = len(pattern.findall(text))
        if count != 1:
            if count > 1 or not missing_ok:
                block(text, tagged, tag=tag, source=source)  # raises, naming the marker
            missing.append(tagged)
            continue
        text = pattern.sub(lambda m, body=body: m.group(1) + body.strip("\n") + "\n" + m.group(3), text)
    if missing and len(missing) == len(blocks):
        names = ", ".join(markers(n, tag)[0] for n in missing)
        raise ConfigError(f"{source}: none of the blocks {names} (each closed by <!-- /{tag}:NAME -->)")
    return text


def fill_doc(path: str | Path, blocks: dict[str, str], *, tag: str = TAG, prefix: str = "",
             missing_ok: bool = False) -> bool:
    """Replace each block ``NAME`` of the markdown file ``path`` by ``blocks[NAME]`` (see :func:`fill`); the file is
    rewritten only when something changed. Returns whether it changed."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such markdown file")
    text = path.read_text()
    new = fill(text, blocks, tag=tag, prefix=prefix, missing_ok=missing_ok, source=str(path))
    if new != text:
        write_text(path, new)
    return new != text


# ----- the registry -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DocTable:
    """One generated table: block ``name`` of ``doc`` is ``render(rows of csvs[0], rows of csvs[1], ...)``."""

    doc: str  # relative to the checkout, e.g. docs/world_model.md
    name: str
    csvs: tuple[str, ...]  # committed, under docs/
    render: Callable[..., str]

    def text(self, root: Path = ROOT) -> str:
        """The block's body: a provenance comment, then the rendered table."""
        sources = ", ".join(self.csvs)
        note = (f"<!-- written by scripts/doc_tables.py from {sources}: change the CSV (or its renderer, "
                "ebt/analysis/doc_tables.py), not this table -->")
        return note + "\n" + self.render(*(read_rows(root / c) for c in self.csvs)).strip("\n")


def read_rows(path: Path) -> Rows:
    """The rows of a committed CSV, every value as written (strings)."""
    if not path.is_file():
        raise DataError(f"{path}: no such CSV (the tables in docs/ are written from committed CSVs)")
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


# ----- formatting -------------------------------------------------------------------------------------------------
def pm(mean: float, std: float, fmt: str = "{:.2f}", std_fmt: str | None = None) -> str:
    """``mean ± std`` (only the mean when the std is undefined; empty when the mean is)."""
    if math.isnan(mean):
        return ""
    return fmt.format(mean) if math.isnan(std) else f"{fmt.format(mean)} ± {(std_fmt or fmt).format(std)}"


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1) of the finite values (NaN when undefined)."""
    values = [v for v in values if math.isfinite(v)]
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else math.nan


def bold_best(cells: dict[str, str], means: dict[str, float], mode: str = "max") -> dict[str, str]:
    """``cells`` with the one of the best mean in bold (none on a tie or without finite means)."""
    finite = {k: v for k, v in means.items() if math.isfinite(v)}
    if len(finite) < 2:
        return cells
    sign = 1.0 if mode == "max" else -1.0
    best = max(finite.values(), key=lambda v: sign * v)
    winners = [k for k, v in finite.items() if v == best]
    return cells if len(winners) > 1 else {k: f"**{c}**" if k == winners[0] else c for k, c in cells.items()}


# ----- renderers of the producing scripts ------------------------------------------------------------------------
def collect_groups(groups: Rows) -> str:
    """``scripts/collect.py``'s per-configuration table (:func:`ebt.analysis.tools.collect.group_markdown`) from its
    ``groups.csv``."""
    columns = list(groups[0])
    keys = columns[columns.index("config") + 1:columns.index("done")]
    metrics = [c.removesuffix(" mean") for c in columns if c.endswith(" mean")]
    counts = ("done", "failed", "running", "interrupted")
    rows = [{**r, **{k: int(r[k]) for k in counts}} for r in groups]
    return collect.group_markdown(rows, keys, metrics)


def collect_jobs(jobs: Rows, groups: Rows) -> str:
    """``scripts/collect.py``'s per-job table from its ``jobs.csv`` (the metric columns are those of ``groups.csv``)."""
    metrics = [c.removesuffix(" mean") for c in groups[0] if c.endswith(" mean")]
    keys = [c for c in jobs[0] if c not in {"job", "status", "seconds", "error", *metrics}]
    failed = any(r["status"] == "failed" for r in jobs)
    return markdown_table(jobs, ["status", *keys, *metrics, "seconds", *(["error"] if failed else [])])


def think_seeds_headline(headline: Rows) -> str:
    """``scripts/think_seeds.py``'s headline table (``headline.md`` without its caption) from its ``headline.csv``."""
    return markdown_table(headline, list(headline[0]))


def thinking_curve(seeds: Rows, *, fmt: str = "{:.3g}", std_fmt: str | None = None, trained: int | None = None) -> str:
    """The metric against thinking steps (EBT, one row per best-of-N) and loops (looped predictor) per split, and the
    predictor's one pass, mean ± std over seeds, from ``think_seeds.py``'s ``seeds.csv``."""
    metric = next(c.removesuffix("_mean") for c in seeds[0] if c.endswith("_mean"))
    ks = sorted({int(r["steps"]) for r in seeds if r["mode"] == "fixed"}
                | {int(r["loops"]) for r in seeds if r["mode"] == "loops"})
    trained_note = f", trained with {trained}" if trained else ""

    def value(r: dict[str, str]) -> str:
        return pm(cell_float(r[f"{metric}_mean"]), cell_float(r[f"{metric}_std"]), fmt, std_fmt)

    table = []
    for split in dict.fromkeys(r["split"] for r in seeds):
        mine = [r for r in seeds if r["split"] == split]
        lines = {(f"EBT best-of-{n} (k = steps{trained_note})", "steps"):
                 [r for r in mine if r["mode"] == "fixed" and r["best_of"] == n]
                 for n in dict.fromkeys(r["best_of"] for r in mine if r["mode"] == "fixed")}
        lines[("looped predictor (k = loops)", "loops")] = [r for r in mine if r["mode"] == "loops"]
        for (label, axis), rows in lines.items():
            if rows:
                values = {int(r[axis]): value(r) for r in rows}
                table.append({"split": split, "model": label, **{f"k={k}": values.get(k, "") for k in ks}})
        table += [{"split": split, "model": "predictor", "one pass": value(r)} for r in mine
                  if r["mode"] == "predictor"]
    return markdown_table(table, ["split", "model", *(f"k={k}" for k in ks), "one pass"])


def thinking_energy(seeds: Rows, *, fmt: str = "{:.5g}") -> str:
    """The EBT's metric and mean final energy against thinking steps, best-of-1, per split (mean ± std over seeds),
    from ``think_seeds.py``'s ``seeds.csv``."""
    metric = next(c.removesuffix("_mean") for c in seeds[0] if c.endswith("_mean"))
    plain = [r for r in seeds if r["mode"] == "fixed" and int(r["best_of"]) == 1]
    ks = sorted({int(r["steps"]) for r in plain})
    table = []
    for split in dict.fromkeys(r["split"] for r in plain):
        at = {int(r["steps"]): r for r in plain if r["split"] == split}
        for name in (metric, "energy"):
            table.append({"split": split, "quantity": name, **{
                f"k={k}": pm(cell_float(at[k][f"{name}_mean"]), cell_float(at[k][f"{name}_std"]), fmt, "{:.2g}")
                for k in ks}})
    return markdown_table(table, ["split", "quantity", *(f"k={k}" for k in ks)])


def variant_curves(*seeds: Rows, labels: tuple[str, ...], split: str = "ood", fmt: str = "{:.4g}") -> str:
    """One row per variant (``labels``, in the order of its ``think_seeds.py`` ``seeds.csv``): the EBT's metric on
    ``split`` against thinking steps, best-of-1, mean ± std over seeds."""
    table = []
    for label, rows in zip(labels, seeds, strict=True):
        metric = next(c.removesuffix("_mean") for c in rows[0] if c.endswith("_mean"))
        plain = {int(r["steps"]): r for r in rows if r["split"] == split and r["mode"] == "fixed"
                 and int(r["best_of"]) == 1}
        table.append({"variant": label, **{f"k={k}": pm(cell_float(r[f"{metric}_mean"]), cell_float(r[f"{metric}_std"]),
                                                        fmt, "{:.2g}") for k, r in sorted(plain.items())}})
    ks = sorted({c for row in table for c in row if c.startswith("k=")}, key=lambda c: int(c[2:]))
    return markdown_table(table, ["variant", *ks])


def ood_curve_table(summary: Rows, *, metric: str, trained: int) -> str:
    """``scripts/ood_curve.py``'s table and correlation line (:func:`ebt.analysis.thinking.ood_curve.markdown`) from its
    ``ood_curve.csv``."""
    text_columns = {"split", "selected_settings", "gap_from"}
    rows = [{k: (v if k in text_columns else v == "True" if k == "in_sample" else
                 int(v) if k in ("runs", "longest_steps") else cell_float(v)) for k, v in r.items()} for r in summary]
    return ood_curve.markdown(rows, metric, trained)


# ----- renderers of CSVs written by one-off drivers (docs/world_model/) ------------------------------------------
SPLITS = ("val", "ood", "ood_balls")


GENERATION_PATHS = ("cached", "compiled", "windowed")


def generation_speed(rows: Rows) -> str:
    """``scripts/bench_generate.py``'s table: per model and prompt length, tokens/s of each path (cached, windowed,
    compiled where measured), the cached paths' speedups over the windowed one, the time per later token and to the
    first token, the compiled path's warm-up (compilation included) and whether every path wrote the windowed
    tokens."""
    table = []
    for (model, prompt), by_path in _pairs(rows, ("model", "prompt"), "path").items():
        present = [p for p in ("cached", "compiled", "windowed") if p in by_path]
        base = cell_float(by_path["windowed"]["tokens_per_s"])
        row = {"model": model, "prompt": prompt}
        row |= {f"tokens/s {p}": by_path[p]["tokens_per_s"] if p in by_path else "" for p in GENERATION_PATHS}
        row |= {f"speedup {p}": f"**{cell_float(by_path[p]['tokens_per_s']) / base:.1f}x**" if p in by_path else ""
                for p in GENERATION_PATHS[:2]}
        row |= {f"ms/token {p}": by_path[p]["token_ms"] if p in by_path else "" for p in GENERATION_PATHS}
        row["first token ms (" + " / ".join(GENERATION_PATHS) + ")"] = " / ".join(
            by_path[p]["first_ms"] if p in by_path else "-" for p in GENERATION_PATHS)
        row["compiled warm-up s"] = by_path["compiled"]["warmup_s"] if "compiled" in by_path else ""
        row["same tokens"] = "yes" if all(by_path[p]["same_tokens"] == "True" for p in present) else "no"
        table.append(row)
    return markdown_table(table, list(table[0]))


def _pairs(rows: Rows, keys: tuple[str, ...], by: str) -> dict[tuple[str, ...], dict[str, dict[str, str]]]:
    """Rows grouped by ``keys`` (in order of appearance), each group keyed by its value of ``by``."""
    groups: dict[tuple[str, ...], dict[str, dict[str, str]]] = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in keys), {})[r[by]] = r
    return groups


def world_model_tuning(tuning: Rows) -> str:
    """The seed-0 tuning grid of ``docs/world_model.md`` (``tuning_seed0.csv``): PSNR per split, the best ``val`` of
    each model family in bold."""
    table = []
    families = {"EBT": [r for r in tuning if r["objective"] != "predict"],
                "predictor": [r for r in tuning if r["objective"] == "predict"]}
    for family, rows in families.items():
        best = max((cell_float(r["val_psnr"]) for r in rows), default=math.nan)
        for r in rows:
            val = f"{cell_float(r['val_psnr']):.2f}"
            table.append({"model": family if family == "predictor" else f"EBT `{r['objective']}`",
                          "setting": r["setting"], "steps": r["steps"],
                          "val PSNR": f"**{val}**" if cell_float(r["val_psnr"]) == best else val,
                          **{f"{s} PSNR": f"{cell_float(r[f'{s}_psnr']):.2f}" for s in SPLITS[1:]}})
    return markdown_table(table, list(table[0]))


def _setting(label: str) -> tuple[str, str]:
    """``("1", "1")`` from think_seeds' ``best-of-1, 1 steps``."""
    match = re.fullmatch(r"best-of-(\d+), (\d+) steps?", label.strip())
    if match is None:
        raise DataError(f"selected setting {label!r}: expected one fixed setting 'best-of-N, K steps' for every seed")
    return match[1], match[2]


def world_model_next_frame(next_frame: Rows, seeds: Rows, headline: Rows, *, trained: int = 2) -> str:
    """Next-frame PSNR per split, mean ± std over seeds: copying the last frame, the predictor and the EBT at its
    trained steps (``next_frame_seeds.csv``, training's final evaluation) and the EBT at the setting chosen on
    ``val`` (``thinking/headline.csv`` names it, ``thinking/seeds.csv`` holds its values)."""
    label = headline[0]["selected settings"]
    best_of, steps = _setting(label)
    chosen = f"EBT, {label} (chosen on val)"
    table = []
    for split in dict.fromkeys(r["split"] for r in next_frame):
        def values(method: str, column: str = "psnr", split: str = split) -> list[float]:
            return [cell_float(r[column]) for r in next_frame if r["method"] == method and r["split"] == split]

        stats = {"copy last frame": mean_std(values("EBT", "copy_last_psnr")),
                 "predictor": mean_std(values("predictor")),
                 f"EBT, {trained} steps (trained)": mean_std(values("EBT"))}
        row = next((r for r in seeds if r["split"] == split and r["mode"] == "fixed" and r["best_of"] == best_of
                    and r["steps"] == steps), None)
        stats[chosen] = (cell_float(row["psnr_mean"]), cell_float(row["psnr_std"])) if row else (math.nan, math.nan)
        cells = bold_best({k: pm(*v) for k, v in stats.items()}, {k: v[0] for k, v in stats.items()})
        seeds_n = len(values("EBT"))
        table.append({"split": split, "seeds": seeds_n, **cells})
    return markdown_table(table, list(table[0]))


METHODS = {"predictor": "predictor", "EBT": "EBT", "copy_last": "copy last"}


def world_model_rollouts(rollouts: Rows) -> str:
    """PSNR of the k-th predicted frame, mean ± std over seeds, per split and method (``rollouts_seeds.csv``); the best
    method of each split and horizon in bold."""
    horizons = sorted({int(r["horizon"]) for r in rollouts})
    table = []
    for split in dict.fromkeys(r["split"] for r in rollouts):
        mine = [r for r in rollouts if r["split"] == split]
        methods = list(dict.fromkeys(r["method"] for r in mine))
        cells = {m: {} for m in methods}
        for h in horizons:
            at = {r["method"]: r for r in mine if int(r["horizon"]) == h}
            shown = bold_best({m: pm(cell_float(r["psnr_mean"]), cell_float(r["psnr_std"])) for m, r in at.items()},
                              {m: cell_float(r["psnr_mean"]) for m, r in at.items()})
            for m, c in shown.items():
                cells[m][f"+{h}"] = c
        seeds = {m: next(r["seeds"] for r in mine if r["method"] == m) for m in methods}
        table += [{"split": split, "model": METHODS.get(m, m), "seeds": seeds[m], **cells[m]} for m in methods]
    return markdown_table(table, ["split", "model", "seeds", *(f"+{h}" for h in horizons)])


def world_model_rollout_settings(rollouts: Rows) -> str:
    """Seed 0's EBT rollouts at each thinking setting (``rollouts_ebt_steps_seed0.csv``): PSNR of the k-th predicted
    frame per split and setting."""
    horizons = sorted({int(r["horizon"]) for r in rollouts})
    table = []
    for split in dict.fromkeys(r["split"] for r in rollouts):
        for setting in dict.fromkeys(r["ebt_thinking"] for r in rollouts):
            at = {int(r["horizon"]): r for r in rollouts if r["split"] == split and r["ebt_thinking"] == setting}
            table.append({"split": split, "EBT thinking per frame": setting,
                          **{f"+{h}": f"{cell_float(at[h]['psnr']):.2f}" for h in horizons if h in at}})
    return markdown_table(table, ["split", "EBT thinking per frame", *(f"+{h}" for h in horizons)])


def world_model_longer(longer: Rows) -> str:
    """Seed 0 trained 3000 steps (``longer_training_seed0.csv``): PSNR per split at each evaluation."""
    table = [{"model": r["model"], "training step": r["step"], "evaluated by": r["source"],
              "thinking steps": r["steps_thinking"],
              **{f"{s} PSNR": f"{cell_float(r[f'{s}_psnr']):.2f}" for s in SPLITS}} for r in longer]
    return markdown_table(table, list(table[0]))


# ----- every generated table ---------------------------------------------------------------------------------------
WM = "docs/world_model"
REASONING = "docs/reasoning"
LS = "docs/thinking_converges/linear_solve"
ABLATION_DIRS = ("recipe", "no_own_outputs", "no_energy_shape", "no_backtrack", "no_contrastive")
ABLATION = ("recipe (seeds 0-2)", "without own outputs (1)", "without energy shape (2)", "without backtracking (3)",
            "without contrastive (4)")
REGISTRY: tuple[DocTable, ...] = (
    DocTable("docs/thinking_converges.md", "linear_solve_grids", (f"{LS}/grids/jobs.csv", f"{LS}/grids/groups.csv"),
             collect_jobs),
    *(DocTable("docs/thinking_converges.md", f"linear_solve_{name}_goal", (f"{LS}/{name}/goal.csv",), goal_table)
      for name in ("ebt_converge", "ebt")),
    *(DocTable("docs/thinking_converges.md", f"linear_solve_{name}_curve", (f"{LS}/{name}/seeds.csv",),
               functools.partial(thinking_curve, fmt="{:.4g}", std_fmt="{:.2g}", trained=2))
      for name in ("ebt_converge", "ebt")),
    DocTable("docs/thinking_converges.md", "linear_solve_energy", (f"{LS}/ebt_converge/seeds.csv",), thinking_energy),
    DocTable("docs/thinking_converges.md", "linear_solve_ablation_curves",
             tuple(f"{LS}/ablation/{v}/seeds.csv" for v in ABLATION_DIRS),
             functools.partial(variant_curves, labels=ABLATION)),
    DocTable("docs/thinking_converges.md", "linear_solve_ablation_jobs",
             (f"{LS}/ablation/jobs/jobs.csv", f"{LS}/ablation/jobs/groups.csv"), collect_jobs),
    DocTable("docs/thinking_converges.md", "linear_solve_ablation",
             tuple(f"{LS}/ablation/{v}/goal.csv" for v in ABLATION_DIRS),
             functools.partial(ablation_table, labels=ABLATION)),
    DocTable("docs/generation.md", "speed", ("docs/generation/generation.csv",), generation_speed),
    *(DocTable("docs/scaling.md", f"scaling_{x}", (f"docs/scaling/{x}/fits.csv",), fits_table)
      for x in ("params", "tokens", "flops", "depth", "bpe_params", "bpe_flops")),
    DocTable("docs/scaling.md", "scaling_thinking", ("docs/scaling/thinking_params/thinking.csv",
                                                     "docs/scaling/thinking_params/thinking_trend.csv"),
             thinking_tables),
    DocTable("docs/thinking_text.md", "ood_curve", ("docs/thinking_text/ood_curve.csv",),
             functools.partial(ood_curve_table, metric="bpb", trained=2)),
    DocTable("docs/thinking_text.md", "curve", ("docs/thinking_text/seeds.csv",),
             functools.partial(thinking_curve, fmt="{:.3f}", trained=2)),
    DocTable("docs/thinking_text.md", "headline", ("docs/thinking_text/headline.csv",), think_seeds_headline),
    DocTable("docs/ebt_speed.md", "candidates_groups", ("docs/ebt_speed/candidates_groups.csv",), collect_groups),
    DocTable("docs/ebt_speed.md", "candidates_jobs",
             ("docs/ebt_speed/candidates_jobs.csv", "docs/ebt_speed/candidates_groups.csv"), collect_jobs),
    DocTable("docs/world_model.md", "tuning", (f"{WM}/tuning_seed0.csv",), world_model_tuning),
    DocTable("docs/world_model.md", "next_frame",
             (f"{WM}/next_frame_seeds.csv", f"{WM}/thinking/seeds.csv", f"{WM}/thinking/headline.csv"),
             functools.partial(world_model_next_frame, trained=2)),
    DocTable("docs/world_model.md", "thinking_curve", (f"{WM}/thinking/seeds.csv",),
             functools.partial(thinking_curve, fmt="{:.2f}", trained=2)),
    DocTable("docs/world_model.md", "thinking_headline", (f"{WM}/thinking/headline.csv",), think_seeds_headline),
    DocTable("docs/world_model.md", "rollouts", (f"{WM}/rollouts_seeds.csv",), world_model_rollouts),
    DocTable("docs/world_model.md", "rollout_settings", (f"{WM}/rollouts_ebt_steps_seed0.csv",),
             world_model_rollout_settings),
    DocTable("docs/world_model.md", "longer_training", (f"{WM}/longer_training_seed0.csv",), world_model_longer),
    DocTable("docs/reasoning.md", "matrix_inverse_headline", (f"{REASONING}/matrix_inverse/headline.csv",),
             think_seeds_headline),
    DocTable("docs/reasoning.md", "matrix_inverse_curve", (f"{REASONING}/matrix_inverse/seeds.csv",),
             functools.partial(thinking_curve, fmt="{:.4g}", std_fmt="{:.2g}", trained=2)),
    DocTable("docs/reasoning.md", "sudoku_headline", (f"{REASONING}/sudoku/headline.csv",), think_seeds_headline),
    DocTable("docs/reasoning.md", "sudoku_curve", (f"{REASONING}/sudoku/seeds.csv",),
             functools.partial(thinking_curve, fmt="{:.3f}", trained=2)),
)


def tables_of(doc: str, registry: Sequence[DocTable] = REGISTRY) -> list[DocTable]:
    return [t for t in registry if t.doc == doc]


def write_all(root: Path = ROOT, registry: Sequence[DocTable] = REGISTRY) -> list[str]:
    """Rewrite every registered block from its CSVs (every doc rendered before any is written, so a missing marker
    or CSV changes nothing); returns the docs that changed."""
    new = {}
    for doc in dict.fromkeys(t.doc for t in registry):
        path = root / doc
        if not path.is_file():
            raise ConfigError(f"{doc}: no such markdown file (registered in ebt/analysis/doc_tables.py)")
        text = path.read_text()
        filled = fill(text, {t.name: t.text(root) for t in tables_of(doc, registry)}, source=doc)
        if filled != text:
            new[doc] = filled
    for doc, text in new.items():
        write_text(root / doc, text)
    return list(new)


def stale(root: Path = ROOT, registry: Sequence[DocTable] = REGISTRY) -> list[str]:
    """``doc: table:NAME`` of every registered block whose text differs from its render (a missing block raises)."""
    out = []
    for t in registry:
        path = root / t.doc
        if not path.is_file():
            raise ConfigError(f"{path}: no such markdown file (registered in ebt/analysis/doc_tables.py)")
        if block(path.read_text(), t.name, source=t.doc).strip("\n") != t.text(root):
            out.append(f"{t.doc}: {markers(t.name)[0]} differs from its render of {', '.join(t.csvs)}")
    return out


def main(cfg: DictConfig) -> int:
    """``scripts/doc_tables.py [check=true]``: 0 when written (or up to date), 1 when ``check=true`` found stale
    tables; a missing marker or CSV is a :class:`ConfigError` / :class:`DataError` (one ``error:`` line, exit 2)."""
    if not isinstance(cfg.check, bool):
        raise ConfigError(f"check={cfg.check} must be true or false")
    if cfg.check:
        differing = stale()
        for line in differing:
            print(line)
        if differing:
            print(f"{len(differing)} table(s) differ: run python scripts/doc_tables.py", file=sys.stderr)
            return 1
        print(f"{len(REGISTRY)} tables up to date")
        return 0
    changed = write_all()
    print(f"rewrote {', '.join(changed)}" if changed else f"{len(REGISTRY)} tables up to date")
    return 0
