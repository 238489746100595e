"""Cost of one EBT training step versus a predictor step at the same backbone (time and peak memory).

    python scripts/bench_ebt.py                    # GPU preset (d=384, 6 layers, 6 heads, T=256, V 256 and 32k)
    python scripts/bench_ebt.py --preset cpu       # smaller; the default without a CUDA device
    python scripts/bench_ebt.py --dim 384 --layers 6 --heads 6 --seq 256 --vocab 256 32768 --batch 8 --steps 2
    python scripts/bench_ebt.py --no-checkpoint --out /tmp/ebt.csv   # skip the checkpointed columns; another CSV

Rows (per vocabulary size): ``predict`` (one forward + backward), ``ebt`` (``--steps`` thinking steps, second
order, context keys/values computed once and reused: ``cache_context=true``), ``ebt_nocache`` (the context
stream recomputed at every step, as the reference implementation does), ``ebt_truncated`` (only the last step
second order and scored: ``truncate=true``) and ``think_eval`` (evaluation-time thinking with the same steps:
first-order, fused SDPA). A step = loss + backward + zeroing gradients (no
optimiser). Prints a table with each row's ratio to ``predict`` and appends to ``bench_results/ebt.csv`` (or
``--out``; timing and CSV columns: :mod:`ebt.analysis.bench`).

Memory: ``peak_mb`` is the most memory held during one step above what was held before it: on CUDA the allocator's
peak (``torch.cuda.max_memory_allocated``), on the CPU the peak of torch's CPU tensor allocations (profiler memory
events, ``cpu_peak="allocator"``: exact bytes, no allocator caching). ``ckpt_peak_mb`` and ``ckpt_ms`` are the same
training step with activation checkpointing (``model.backbone.checkpoint=true``; not for ``think_eval``, which does
not train); ``--no-checkpoint`` skips them.
"""

import argparse
from pathlib import Path

import torch

from ebt.analysis.bench import RESULTS, append_csv, environment, measure_step
from ebt.tasks.base import Task
from ebt.training.build import build_objective
from ebt.training.config import compose_train

PRESETS = {"gpu": dict(dim=384, layers=6, heads=6, seq=256, vocab=[256, 32768], batch=8),
           "cpu": dict(dim=128, layers=2, heads=4, seq=128, vocab=[256, 4096], batch=4)}


class RandomTokens(Task):
    """Uniform random tokens (the cost of a step does not depend on the data)."""

    kind, metric, metric_mode, causal = "tokens", "acc", "max", True

    def __init__(self, vocab_size: int, seq: int) -> None:
        super().__init__(seed=0)
        self.vocab_size, self.seq = vocab_size, seq

    def make_batch(self, split: str, index: int, batch_size: int) -> dict[str, torch.Tensor]:
        generator = torch.Generator().manual_seed(index)
        ids = torch.randint(0, self.vocab_size, (batch_size, self.seq + 1), generator=generator)
        return {"input_ids": ids[:, :-1], "targets": ids[:, 1:]}

    def metrics(self, prediction, batch):
        return {"acc": (prediction.argmax(-1) == batch["targets"]).float().mean()}


def build(kind: str, task: Task, args, steps: int, checkpoint: bool = False):
    overrides = [f"model.dim={args.dim}", f"model.backbone.n_layers={args.layers}", f"model.mixer.n_heads={args.heads}",
                 "kernels=auto", f"model.backbone.checkpoint={checkpoint}"]
    if kind == "predict":
        overrides += ["model/objective=predict"]
    else:
        overrides += ["model/objective=ebt", f"model.objective.steps={steps}", "model.objective.alpha_jitter=1",
                      f"model.objective.cache_context={kind != 'ebt_nocache'}",
                      f"model.objective.truncate={kind == 'ebt_truncated'}"]
    cfg = compose_train(overrides)
    return build_objective(cfg.model, task)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="gpu" if torch.cuda.is_available() else "cpu")
    for name in ("dim", "layers", "heads", "seq", "batch"):
        parser.add_argument(f"--{name}", type=int)
    parser.add_argument("--vocab", type=int, nargs="+")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--checkpoint", action=argparse.BooleanOptionalAction, default=True,
                        help="also measure each training row with activation checkpointing (default: yes)")
    parser.add_argument("--out", type=Path, default=RESULTS / "ebt.csv", help="CSV to append to")
    args = parser.parse_args()
    for key, value in PRESETS[args.preset].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    name = environment(device)["device"]
    rows = []
    for vocab in args.vocab:
        task = RandomTokens(vocab, args.seq)
        batch = {k: v.to(device) for k, v in task.make_batch("train", 0, args.batch).items()}
        for kind in ("predict", "ebt", "ebt_nocache", "ebt_truncated", "think_eval"):
            row = {"vocab": vocab, "kind": kind, "steps": args.steps, "dim": args.dim, "layers": args.layers,
                   "seq": args.seq, "batch": args.batch, **measure(kind, task, batch, args, device)}
            if args.checkpoint and kind != "think_eval":
                timing = measure(kind, task, batch, args, device, checkpoint=True)
                row |= {"ckpt_ms": timing["median_ms"], "ckpt_peak_mb": timing["peak_mb"]}
            rows.append(row)
    base = {r["vocab"]: r["median_ms"] for r in rows if r["kind"] == "predict"}
    print(f"{name}: d={args.dim}, {args.layers} layers, {args.heads} heads, T={args.seq}, batch {args.batch}, "
          f"S={args.steps}")
    print(f"{'vocab':>7} {'kind':>13} {'median ms':>10} {'x predict':>10} {'peak MB':>9} {'ckpt ms':>9} "
          f"{'ckpt peak MB':>13}")
    for r in rows:
        r["ratio"] = r["median_ms"] / base[r["vocab"]]
        ckpt_ms, ckpt_mb = (f"{r[k]:.1f}" if k in r else "-" for k in ("ckpt_ms", "ckpt_peak_mb"))
        print(f"{r['vocab']:>7} {r['kind']:>13} {r['median_ms']:>10.1f} {r['ratio']:>10.2f} {r['peak_mb']:>9.1f} "
              f"{ckpt_ms:>9} {ckpt_mb:>13}")
    path = append_csv(args.out, rows, device)
    print(f"appended to {path}")


def measure(kind: str, task: Task, batch: dict[str, torch.Tensor], args, device: str, *,
            checkpoint: bool = False) -> dict[str, float]:
    """Time and peak memory of one step of ``kind`` (see the module docstring)."""
    torch.manual_seed(0)
    model = build("ebt" if kind == "think_eval" else kind, task, args, args.steps, checkpoint).to(device)

    def step() -> None:
        if kind == "think_eval":
            model.think(batch, steps=args.steps)
            return
        loss, _ = model.loss(batch)
        loss.backward()
        model.zero_grad(set_to_none=True)

    return measure_step(step, args.reps, device, cpu_peak="allocator")


if __name__ == "__main__":
    main()
