"""Collect ablation grids: ``python scripts/collect.py DIR [DIR ...] [--out OUT] [--metrics M ...] [--seed-key seed]``.

DIR is a multirun folder (``hydra.sweep.dir``) or any folder above job folders; it may still be running. Prints a
markdown table per job and one per configuration (mean ± std over seeds), and writes into ``OUT`` (default:
``DIR[0]/collect``): ``jobs.csv``, ``groups.csv``, ``table.md``, ``bars.png`` (headline metric per configuration)
and, when jobs log ``val/<metric>_step{k}`` (EBT thinking steps), ``thinking.png``. A job whose files cannot be read is
skipped with one line on stderr; a ``--metrics`` name no job has is an error (exit 2).
"""

import argparse
import sys
from pathlib import Path

from ebt.analysis import collect as C
from ebt.errors import UserError


def main(argv: list[str] | None = None) -> int:
    try:
        return collect(argv)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def collect(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", type=Path, help="multirun folders")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: first DIR/collect)")
    parser.add_argument("--metrics", nargs="+", default=None,
                        help="metric columns, e.g. val/acc val/tok_acc (default: the task's val/ and ood/ metric)")
    parser.add_argument("--seed-key", default="seed", help="override averaged over (default: seed)")
    args = parser.parse_args(argv)
    missing = [str(d) for d in args.dirs if not d.is_dir()]
    if missing:
        print(f"error: not a folder: {', '.join(missing)}", file=sys.stderr)
        return 2
    jobs = C.load_jobs(args.dirs)
    if not jobs:
        print(f"error: no job folders (with .hydra/) under {', '.join(map(str, args.dirs))}", file=sys.stderr)
        return 2
    metrics = args.metrics or C.headline(jobs)
    C.check_metrics(jobs, metrics)
    out = args.out or args.dirs[0] / "collect"
    out.mkdir(parents=True, exist_ok=True)
    keys, common = C.split_keys(jobs, args.seed_key)
    config_keys = [k for k in keys if k != args.seed_key]
    rows = C.job_rows(jobs, keys, metrics, args.dirs[0])
    groups = C.group(jobs, config_keys, metrics)
    failed = any(j.status == "failed" for j in jobs)
    common_line = " ".join(f"{k}={v}" for k, v in common.items()) or "(none)"
    table = "\n\n".join([f"Common overrides: {common_line}",
                         C.to_markdown(rows, ["status", *keys, *metrics, "seconds", *(["error"] if failed else [])]),
                         C.group_markdown(groups, config_keys, metrics)])
    print(table)
    (out / "table.md").write_text(table + "\n")
    (out / "jobs.csv").write_text(C.to_csv(rows))
    (out / "groups.csv").write_text(C.to_csv(groups))
    written = ["jobs.csv", "groups.csv", "table.md"]
    if any(g["done"] for g in groups) and metrics:
        C.plot_bars([g for g in groups if g["done"]], metrics, out / "bars.png")
        written.append("bars.png")
    if curves := C.thinking_curves(jobs, config_keys):
        C.plot_thinking(curves, out / "thinking.png")
        written.append("thinking.png")
    print(f"\nwrote {', '.join(written)} to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
