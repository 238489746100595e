"""This repo's EBT training step timed side by side with the EBT authors' reference implementation, in one process.

    python scripts/bench_reference.py reference=/tmp/ebt_ref                     # cpu preset: V 256 and 4096
    python scripts/bench_reference.py reference=/tmp/ebt_ref preset=xxs vocab=32000 batch=4 reps=3
    python scripts/bench_reference.py reference=/tmp/ebt_ref ours.ebt_emb=model.objective.candidate=embedding

``preset``: ``xxs`` on CUDA, ``cpu`` otherwise; ``dim``, ``layers``, ``heads``, ``seq``, ``vocab`` (a list) and
``batch`` are the preset's unless given.

The reference: github.com/alexiglad/EBT at commit 0ad36281cc1040136973270073af20c544249224, imported from the
checkout ``reference=DIR`` names (``git clone https://github.com/alexiglad/EBT && git -C EBT checkout 0ad36281``);
files that differ from that commit are named in a warning (and the ``reference_modified`` CSV column). Nothing else
of it is needed: its NLP models' unused heavy imports (torchvision, diffusers; transformers when absent) are stubbed
for the import and its tokenizer replaced by one of ``vocab`` tokens (eos/pad id 0, as the reference's
GPT-NeoX tokenizer has), see :mod:`ebt.benchmarks.reference_checkout`.

Rows, per vocabulary size, all on the same random token batch, timed in turns (``measure_interleaved``: one call of
each per round, ``reps`` rounds, medians):

* ``ref_ebt``: the reference ``EBT_NLP`` (``model/nlp/ebt.py``) with its own ``train_model.py`` argparse defaults and
  the recipe of its ``job_scripts/nlp/pretrain/ebt_s1.sh``: ``ebt_type=time_embed`` (a learned step embedding),
  ``normalize_initial_condition`` (softmax of the candidate logits), ``random_noise`` initial logits, step size 500
  and learnable, ``mcmc_num_steps=steps`` (2), not truncated, candidates detached between steps; no alpha jitter
  (``randomize_mcmc_step_size_scale=1``), no Langevin noise, no replay buffer, no random step counts, no contrastive
  loss. Size from the preset (``model_size`` unset; ``context_length=seq``, ``batch_size_per_device=batch``);
  ``ref_set.KEY=VALUE`` changes any reference option. The benchmark checks that one step really takes ``steps``
  second-order steps (``autograd.grad(create_graph=True)`` calls) and as many energy forwards.
* ``ref_predict``: the reference's plain transformer (``model/nlp/baseline_transformer.py``), ``ref_baseline=false``
  drops it.
* ``ref_ebt_wide`` / ``ref_predict_wide``: the same with our MLP's hidden width (``ffn_dim_multiplier`` = ours / d).
  The reference's default SwiGLU MLP is only d wide (``ffn_dim_multiplier=None``: hidden = d), ours 8/3 d (rounded
  up to 8), so at the same d/layers/heads its blocks have fewer weights and FLOPs; the wide rows compare equal
  backbones. ``ref_wide=false`` drops them.
* ours: ``predict`` (``model/objective=predict``), ``ebt`` (defaults, ``alpha_jitter=1``, ``steps=steps``),
  ``ebt_func`` (``thinking_grad=func``) and each ``ours.NAME=override1,override2,...`` (or
  ``ours.NAME=[override1,override2]``: Hydra overrides on top of the ``ebt`` row's, passed through as given).

A step = loss + backward + zero_grad (no optimiser). Times: ``cpu_ms`` is the process CPU time of a call
(``time.process_time``: with ``OMP_NUM_THREADS=1`` it is the single core's work, little moved by other processes'
load), ``wall_ms`` the wall clock; ratios use ``clock`` (default ``cpu`` on the CPU, always ``wall`` on CUDA).
``gflop``: one step's FLOPs by ``torch.utils.flop_counter`` (matmuls and attention). ``params``: trainable parameters.
Appends to ``bench_results/reference.csv`` (or ``out``).

Known differences at the same d / layers / heads: (1) the MLP width (above); (2) the reference recomputes the
context stream at every thinking step and its backward runs through the context rows too (its energy transformer sees
[step embedding, context, candidates] at every step); our ``ebt`` row computes the context keys/values once
(``cache_context=true``); (3) parameters: its step embedding (``time_embed``: steps x d) is extra; otherwise both have
a token embedding, a bias-free V x d candidate projection and a d -> 1 energy head; (4) its step size is learned
directly and starts at 500 (ours in log space, 100), its initial logits have std 1 (ours 0.1): neither changes the
cost; (5) its loss ignores target token 0 (pad = eos id), about 1/V of the random targets.
"""

import statistics
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import torch
from omegaconf import DictConfig

from ebt.benchmarks.measure import RESULTS, append_csv, environment, measure_interleaved, step_flops
from ebt.benchmarks.reference_checkout import (
    REFERENCE_COMMIT,
    build_ours,
    check_reference,
    check_reference_second_order,
    cpu_timed,
    ffn_hidden,
    import_reference,
    n_params,
    our_step,
    parse_ours,
    parse_ref_set,
    reference_hparams,
    reference_step,
)
from ebt.options import plain_options
from ebt.tasks.random_tokens import RandomTokens

PRESETS = {"cpu": dict(dim=128, layers=2, heads=4, seq=128, vocab=[256, 4096], batch=4),
           "xxs": dict(dim=384, layers=6, heads=6, seq=256, vocab=[32000], batch=4)}
DEFAULTS = {"reference": None, "preset": None, "dim": None, "layers": None, "heads": None, "seq": None, "vocab": None,
            "batch": None, "steps": 2, "reps": 3, "ours": {}, "ref_set": {}, "ref_baseline": True, "ref_wide": True,
            "clock": "cpu", "out": str(RESULTS / "reference.csv")}


def read_args(cfg: DictConfig) -> SimpleNamespace:
    """The options (module docstring) checked: ``ours`` becomes ``{row: overrides}``, sizes are filled in from the
    preset. ConfigError for a missing or wrong ``reference``, a malformed ``ours.*`` / ``ref_set.*``, a bad value."""
    args = plain_options(cfg, lists=("vocab",), flags=("ref_baseline", "ref_wide"),
                         positive=("dim", "layers", "heads", "seq", "batch", "vocab", "steps", "reps"),
                         choices={"preset": sorted(PRESETS), "clock": ("cpu", "wall")})
    args.preset = args.preset or ("xxs" if torch.cuda.is_available() else "cpu")
    for key, value in PRESETS[args.preset].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.reference = None if args.reference is None else str(args.reference)
    args.checkout = check_reference(args.reference)  # (root, modified files): a clear error before anything is built
    args.ours, args.ref_set = parse_ours(args.ours), parse_ref_set(args.ref_set)
    return args


def main(cfg: DictConfig) -> list[dict]:
    args = read_args(cfg)
    root, modified = args.checkout
    if modified:
        warnings.warn(f"{root} differs from {REFERENCE_COMMIT[:8]} in {', '.join(modified)}", stacklevel=1)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    clock = "wall" if device == "cuda" else args.clock
    rows = []
    for vocab in args.vocab:
        rows += measure_vocab(vocab, root, args, device, clock, modified)
    print(f"{environment(device)['device']}: d={args.dim}, {args.layers} layers, {args.heads} heads, T={args.seq}, "
          f"batch {args.batch}, {args.steps} steps, {args.reps} interleaved rounds, ratios by {clock} time")
    print(f"{'vocab':>6} {'row':>16} {'cpu ms':>9} {'wall ms':>9} {'x ref_ebt':>9} {'x predict':>9} {'GFLOP':>8} "
          f"{'params':>11} {'ffn':>5}")
    for r in rows:
        print(f"{r['vocab']:>6} {r['row']:>16} {r['cpu_ms']:>9.1f} {r['wall_ms']:>9.1f} {r['x_ref_ebt']:>9.2f} "
              f"{r['x_predict']:>9.2f} {r['gflop']:>8.2f} {r['params']:>11,} {r['ffn_hidden'] or '-':>5}")
    print(f"appended to {append_csv(args.out, rows, device)}")
    return rows


def measure_vocab(vocab: int, root: Path, args, device: str, clock: str, modified: list[str]) -> list[dict]:
    """Every row of one vocabulary size: build, warm up, count FLOPs, then time all rows in turns."""
    task = RandomTokens(vocab, args.seq)
    batch = {k: v.to(device) for k, v in task.make_batch("train", 0, args.batch).items()}
    ours: dict[str, tuple[torch.nn.Module, Callable[[], None], str]] = {}
    for name, overrides in args.ours.items():
        torch.manual_seed(0)
        model = build_ours(overrides, task, dim=args.dim, layers=args.layers, heads=args.heads, steps=args.steps)
        ours[name] = (model.to(device), our_step(model, batch), ",".join(overrides))
    hidden = ffn_hidden(ours["predict"][0])
    models = reference_rows(vocab, root, args, batch, device, hidden) | ours
    counts = {}
    for name, (model, step, _) in models.items():
        if name.startswith("ref_ebt"):  # (also the warm-up)
            counts[name] = check_reference_second_order(model, step, args.steps)
            print(f"V={vocab}: {name} step checked: {counts[name]}", file=sys.stderr)
    cpu: dict[str, list[float]] = {name: [] for name in models}
    steps, flops = {}, {}
    for name, (_, step, _) in models.items():
        if name not in counts:
            step()  # warm-up
        flops[name] = step_flops(step)
        steps[name] = cpu_timed(step, cpu[name])
    for record in cpu.values():
        record.clear()
    timings = measure_interleaved(steps, args.reps, device, warmup=0)
    rows = []
    for name, timing in timings.items():
        rows.append({"vocab": vocab, "row": name, "source": models[name][2], "dim": args.dim, "layers": args.layers,
                     "heads": args.heads, "seq": args.seq, "batch": args.batch, "steps": args.steps,
                     "reps": args.reps, "clock": clock, "cpu_ms": statistics.median(cpu[name]),
                     "wall_ms": timing["median_ms"], "wall_p20_ms": timing["p20_ms"], "wall_p80_ms": timing["p80_ms"],
                     "gflop": flops[name] / 1e9, "params": n_params(models[name][0]),
                     "threads": torch.get_num_threads(), "ffn_hidden": ffn_hidden(models[name][0]),
                     "second_order_steps": counts[name]["second_order_steps"] if name in counts else "",
                     "reference_modified": ";".join(modified)})
    key = "cpu_ms" if clock == "cpu" else "wall_ms"
    by_name = {r["row"]: r[key] for r in rows}
    for r in rows:
        r["median_ms"] = r[key]
        r["x_ref_ebt"] = r[key] / by_name["ref_ebt"]
        r["x_predict"] = r[key] / by_name["predict"] if "predict" in by_name else float("nan")
    return rows


def reference_rows(vocab: int, root: Path, args, batch: dict[str, torch.Tensor], device: str,
                   hidden: int | None) -> dict[str, tuple[torch.nn.Module, Callable[[], None], str]]:
    """``{row: (model, step, source)}`` of the reference: its EBT and baseline with its own MLP width (hidden = d)
    and, with ``ref_wide``, with ours (``ffn_dim_multiplier`` = our MLP's hidden width / d)."""
    ebt_module, baseline_module, stubs = import_reference(root, vocab)
    if stubs:
        print(f"stubbed for the reference's import (unused by its NLP models): {', '.join(stubs)}", file=sys.stderr)
    size = dict(dim=args.dim, layers=args.layers, heads=args.heads, seq=args.seq, batch=args.batch, steps=args.steps)
    variants = {"": args.ref_set}
    if args.ref_wide and hidden is not None and hidden != args.dim:
        variants["_wide"] = args.ref_set | {"ffn_dim_multiplier": (hidden + 0.5) / args.dim}
    out = {}
    for suffix, extra in variants.items():
        hparams = reference_hparams(root, **size, extra=extra)
        source = "reference" + "".join(f",{k}={v}" for k, v in extra.items())
        kinds = [("ref_ebt", ebt_module.EBT_NLP)]
        if args.ref_baseline:
            kinds.append(("ref_predict", baseline_module.Baseline_Transformer_NLP))
        for name, cls in kinds:
            torch.manual_seed(0)
            model = cls(hparams).to(device)
            out[name + suffix] = (model, reference_step(model, batch), source)
    return out

