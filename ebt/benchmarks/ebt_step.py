"""Cost of one EBT training step versus a predictor step at the same backbone (time, FLOPs, peak memory).

    python scripts/bench_ebt.py                    # GPU preset (d=384, 6 layers, 6 heads, T=256, V 256 and 32k)
    python scripts/bench_ebt.py preset=cpu         # smaller; the default without a CUDA device
    python scripts/bench_ebt.py preset=xxs vocab=32000 batch=4     # the size measured beside the reference
    python scripts/bench_ebt.py dim=384 layers=6 heads=6 seq=256 vocab=[256,32768] batch=8 steps=2
    python scripts/bench_ebt.py checkpoint=false out=/tmp/ebt.csv  # skip the checkpointed columns; another CSV
    python scripts/bench_ebt.py compile=[model,thinking_step]      # add torch.compile'd rows (minutes to compile)

``dim``, ``layers``, ``heads``, ``seq``, ``vocab`` (a list) and ``batch`` are the preset's unless given.

Rows (per vocabulary size): ``predict`` (one forward + backward), ``ebt`` (``steps`` thinking steps, second order,
context keys/values computed once and reused: ``cache_context=true``), ``ebt_func`` (the same with
``thinking_grad=func``: same numbers, no gradient to the detached candidates), ``ebt_nocache`` (the context stream
recomputed at every step; the reference implementation does more still: it also differentiates through the context
rows), ``ebt_truncated`` (only the last step second order and scored: ``truncate=true``), ``ebt_topk`` /
``ebt_embedding`` (the large-vocabulary candidates ``model.objective.candidate=topk`` with ``candidate_k=topk``, and
``candidate=embedding``: approximations, ``ebt/objectives/candidates.py``) and ``think_eval`` (evaluation-time
thinking, ``think_steps`` steps, default ``steps``: first-order, fused SDPA; ``think_eval_topk`` /
``think_eval_embedding``: the same with those candidates). ``compile=[MODE,...]`` (``model``, ``thinking_step``)
adds ``predict_compile_model`` / ``ebt_compile_<mode>`` (the top-level ``compile`` key); on CUDA, ``bf16`` (default
there) adds ``predict_bf16`` / ``ebt_bf16`` (the step under ``torch.autocast(bfloat16)``, as
``trainer.precision=bf16-mixed`` runs it). A step = loss + backward + zeroing gradients (no optimiser). All rows of a
vocabulary size are timed in turns (:func:`ebt.benchmarks.measure.measure_interleaved`: one call of each per round,
``reps`` rounds, medians), so a change of the machine's load hits every row alike. Prints a table with each row's
ratio to ``predict`` and appends to ``bench_results/ebt.csv`` (or ``out``; CSV columns:
:mod:`ebt.benchmarks.measure`).

FLOPs: ``gflop`` is one step's count by ``torch.utils.flop_counter`` (matmuls and attention, forward and every
backward; compiled rows reuse their eager row's count; on CUDA the Triton kernels of ``kernels=auto`` are not
counted, so EBT rows there undercount), ``gflops_per_s`` the achieved rate, ``flop_ratio`` the count relative to
``predict`` and ``per_flop`` = (time ratio to ``predict``) / ``flop_ratio``: 1 means the row spends its time per FLOP
as the predictor does; above 1, extra time goes to uncounted (elementwise, host) work.

Memory: ``peak_mb`` is the most memory held during one step above what was held before it: on CUDA the allocator's
peak (``torch.cuda.max_memory_allocated``), on the CPU the peak of torch's CPU tensor allocations (profiler memory
events, ``cpu_peak="allocator"``: exact bytes, no allocator caching). ``ckpt_peak_mb`` and ``ckpt_ms`` are the same
training step with activation checkpointing (``model.backbone.checkpoint=true``; not for ``think_eval``, which does
not train); ``checkpoint=false`` skips them. ``kinds=[...]`` picks the rows.
"""

import contextlib

import torch
from omegaconf import DictConfig

from ebt.benchmarks.measure import RESULTS, append_csv, environment, measure_interleaved, peak_memory_mb, step_flops
from ebt.options import plain_options
from ebt.tasks.base import Task
from ebt.tasks.random_tokens import RandomTokens
from ebt.training.build import build_objective
from ebt.training.config import compose_train

PRESETS = {"gpu": dict(dim=384, layers=6, heads=6, seq=256, vocab=[256, 32768], batch=8),
           "cpu": dict(dim=128, layers=2, heads=4, seq=128, vocab=[256, 4096], batch=4),
           "xxs": dict(dim=384, layers=6, heads=6, seq=256, vocab=[256], batch=8)}
KINDS = ("predict", "ebt", "ebt_func", "ebt_nocache", "ebt_truncated", "ebt_topk", "ebt_embedding", "think_eval",
         "think_eval_topk", "think_eval_embedding")
CANDIDATES = {"ebt_topk": "topk", "ebt_embedding": "embedding"}  # model.objective.candidate of those rows
DEFAULTS = {"preset": None, "dim": None, "layers": None, "heads": None, "seq": None, "vocab": None, "batch": None,
            "steps": 2, "reps": 5, "kinds": list(KINDS), "topk": 64, "think_steps": None, "checkpoint": True,
            "compile": [], "bf16": None, "out": str(RESULTS / "ebt.csv")}


def build(kind: str, task: Task, args, steps: int, checkpoint: bool = False, compile: str = "none"):
    overrides = [f"model.dim={args.dim}", f"model.backbone.n_layers={args.layers}", f"model.mixer.n_heads={args.heads}",
                 "kernels=auto", f"model.backbone.checkpoint={checkpoint}", f"compile={compile}"]
    if kind == "predict":
        overrides += ["model/objective=predict"]
    else:
        overrides += ["model/objective=ebt", f"model.objective.steps={steps}", "model.objective.alpha_jitter=1",
                      f"model.objective.thinking_grad={'func' if kind == 'ebt_func' else 'autograd'}",
                      f"model.objective.cache_context={kind != 'ebt_nocache'}",
                      f"model.objective.truncate={kind == 'ebt_truncated'}",
                      f"model.objective.candidate={CANDIDATES.get(kind, 'simplex')}",
                      f"model.objective.candidate_k={args.topk}"]
    cfg = compose_train(overrides)
    return build_objective(cfg.model, task)


def main(cfg: DictConfig) -> None:
    args = plain_options(cfg, lists=("vocab", "kinds", "compile"), flags=("checkpoint", "bf16"),
                         positive=("dim", "layers", "heads", "seq", "batch", "vocab", "steps", "reps", "topk",
                                   "think_steps"),
                         choices={"preset": sorted(PRESETS), "kinds": KINDS, "compile": ("model", "thinking_step")})
    args.preset = args.preset or ("gpu" if torch.cuda.is_available() else "cpu")
    args.bf16 = torch.cuda.is_available() if args.bf16 is None else args.bf16
    for key, value in PRESETS[args.preset].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    name = environment(device)["device"]
    rows = []
    for vocab in args.vocab:
        rows += measure_vocab(vocab, args, device)
    print(f"{name}: d={args.dim}, {args.layers} layers, {args.heads} heads, T={args.seq}, batch {args.batch}, "
          f"S={args.steps}, {args.reps} interleaved rounds")
    print(f"{'vocab':>7} {'kind':>22} {'median ms':>10} {'x predict':>10} {'GFLOP':>8} {'x FLOP':>7} {'per FLOP':>9} "
          f"{'GFLOP/s':>8} {'peak MB':>9} {'ckpt ms':>9} {'ckpt peak MB':>13}")
    for r in rows:
        extra = (f"{r[k]:.1f}" if k in r else "-" for k in ("ckpt_ms", "ckpt_peak_mb"))
        print(f"{r['vocab']:>7} {r['kind']:>22} {r['median_ms']:>10.1f} {r['ratio']:>10.2f} {r['gflop']:>8.2f} "
              f"{r['flop_ratio']:>7.2f} {r['per_flop']:>9.2f} {r['gflops_per_s']:>8.1f} {r['peak_mb']:>9.1f} "
              f"{next(extra):>9} {next(extra):>13}")
    path = append_csv(args.out, rows, device)
    print(f"appended to {path}")


def variants(args, device: str) -> list[tuple[str, str, bool, str, bool]]:
    """``(row name, kind, checkpoint, compile, bf16)`` of every step this run times."""
    out = [(kind, kind, False, "none", False) for kind in args.kinds]
    if args.checkpoint:
        out += [(f"{kind}@ckpt", kind, True, "none", False) for kind in args.kinds
                if not kind.startswith("think_eval") and kind != "ebt_func"]  # (func refuses checkpointing)
    for mode in args.compile:
        out += [(f"ebt_compile_{mode}", "ebt", False, mode, False)]
        if mode == "model" and "predict" in args.kinds:
            out += [("predict_compile_model", "predict", False, mode, False)]
    if args.bf16 and device == "cuda":
        out += [(f"{kind}_bf16", kind, False, "none", True) for kind in ("predict", "ebt") if kind in args.kinds]
    return out


def measure_vocab(vocab: int, args, device: str) -> list[dict]:
    """Every row of one vocabulary size: FLOPs and memory one step at a time, then the timings interleaved."""
    task = RandomTokens(vocab, args.seq)
    batch = {k: v.to(device) for k, v in task.make_batch("train", 0, args.batch).items()}
    steps, info = {}, {}
    for row, kind, checkpoint, compile, bf16 in variants(args, device):
        step = make_step(kind, task, batch, args, device, checkpoint=checkpoint, compile=compile, bf16=bf16)
        step()  # warm-up (compilation, lazy initialisation)
        flops = info.get(kind, {}).get("flops", float("nan")) if compile != "none" else step_flops(step)
        info[row] = {"kind": kind, "flops": flops, "peak_mb": peak_memory_mb(step, device, cpu_peak="allocator")}
        steps[row] = step
    timings = measure_interleaved(steps, args.reps, device, warmup=0)
    base = timings["predict"]["median_ms"] if "predict" in timings else float("nan")
    base_flops = info["predict"]["flops"] if "predict" in info else float("nan")
    rows = []
    for row, timing in timings.items():
        if "@ckpt" in row:
            continue
        flops, ratio = info[row]["flops"], timing["median_ms"] / base
        flop_ratio = flops / base_flops
        r = {"vocab": vocab, "kind": row, "steps": args.steps, "dim": args.dim, "layers": args.layers,
             "seq": args.seq, "batch": args.batch, **timing, "peak_mb": info[row]["peak_mb"], "ratio": ratio,
             "gflop": flops / 1e9, "gflops_per_s": flops / 1e9 / (timing["median_ms"] / 1e3),
             "flop_ratio": flop_ratio, "per_flop": ratio / flop_ratio}
        if f"{row}@ckpt" in timings:
            r |= {"ckpt_ms": timings[f"{row}@ckpt"]["median_ms"], "ckpt_peak_mb": info[f"{row}@ckpt"]["peak_mb"]}
        rows.append(r)
    return rows


def make_step(kind: str, task: Task, batch: dict[str, torch.Tensor], args, device: str, *, checkpoint: bool = False,
              compile: str = "none", bf16: bool = False):
    """One step of ``kind`` (see the module docstring) as a function of no arguments."""
    torch.manual_seed(0)
    thinks = kind.startswith("think_eval")
    built = kind.replace("think_eval", "ebt") if thinks else kind  # think_eval_topk: the ebt_topk model, thinking
    model = build(built, task, args, args.steps, checkpoint, compile).to(device)
    precision = torch.autocast(device, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    def step() -> None:
        with precision:
            if thinks:
                model.think(batch, steps=args.think_steps or args.steps, keep=())
                return
            loss, _ = model.loss(batch)
        loss.backward()
        model.zero_grad(set_to_none=True)

    return step

