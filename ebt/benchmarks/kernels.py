"""Benchmark the EBT thinking-step kernels: reference eager vs torch.compile(reference) vs Triton.

Ops: ``softmax_embed`` (``softmax(y) @ W``, y ``(M, V)``, W ``(V, D)``) and ``candidate_update``
(``y - alpha * clamp(g)``, y ``(M, V)``); modes ``fwd``, ``bwd`` (autograd.grad of a kept graph),
``full`` (fwd + bwd). Per case (timing and CSV: :mod:`ebt.benchmarks.measure`): median and p20/p80 wall time, peak
memory above the inputs, bytes moved by an ideal implementation / time (and the fraction of the device's peak
bandwidth when known), TFLOP/s (softmax_embed). Rows are appended to ``bench_results/kernels.csv`` (or ``out``;
device, versions, git sha) and the speed-up over eager vs V is plotted to ``kernels_speedup.png`` beside it
(``plot=false``: no plot).

    python scripts/bench_kernels.py                      # GPU preset (V 256..128k, D 384/1024, M 2k/8k)
    python scripts/bench_kernels.py preset=cpu           # tiny shapes; default when there is no CUDA device
    python scripts/bench_kernels.py V=[256,4096] D=64 M=128 backends=[eager,compile] modes=full

``V``, ``D``, ``M``, ``reps``, ``warmup``: the preset's unless given; ``dtype``: bfloat16 on CUDA, float32 on the CPU
unless given; ``threads``: CPU threads (default 1 on the CPU: OpenMP threads spin badly on a shared, loaded machine).
Triton rows need a CUDA device; elsewhere they are written with an empty time and a ``skipped: ...`` note.
Each backend is timed explicitly. On CUDA the times come from ``triton.testing.do_bench`` (many calls between two
events, L2 flushed between calls; no per-call host synchronisation); ``timer=sync`` times each call between two
synchronisations instead (the CPU's only timer).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from omegaconf import DictConfig

from ebt.analysis.plotting import pyplot, save_figure
from ebt.benchmarks.measure import RESULTS, append_csv, environment, measure_step
from ebt.options import plain_options
from ebt_kernels.candidate_update import candidate_update_reference, candidate_update_triton
from ebt_kernels.dispatch import interpreter_on, triton_status
from ebt_kernels.softmax_embed import softmax_embed_reference, softmax_embed_triton

PRESETS = {
    "gpu": dict(V=[256, 32768, 50257, 131072], D=[384, 1024], M=[2048, 8192], reps=20, warmup=5),
    "cpu": dict(V=[256, 2048, 8192], D=[64], M=[256], reps=7, warmup=2),
}
# Peak DRAM bandwidth in bytes/s by device-name substring (first match wins; vendor datasheets).
PEAK_BANDWIDTH = [("H200", 4.8e12), ("H100 NVL", 3.9e12), ("H100 PCIe", 2.0e12), ("H100", 3.35e12),
                  ("A100-SXM4-80GB", 2.039e12), ("A100 80GB PCIe", 1.935e12), ("A100", 1.555e12),
                  ("L40S", 0.864e12), ("A10G", 0.6e12), ("RTX 4090", 1.008e12)]
OPS, MODES, BACKENDS = ("softmax_embed", "candidate_update"), ("fwd", "bwd", "full"), ("eager", "compile", "triton")
FIELDS = ["op", "mode", "backend", "dtype", "M", "V", "D", "median_ms", "p20_ms", "p80_ms", "peak_mb", "gbytes_per_s",
          "peak_bw_frac", "tflops", "max_abs_err_vs_eager", "note"]
DEFAULTS = {"preset": None, "V": None, "D": None, "M": None, "dtype": None, "ops": list(OPS), "modes": list(MODES),
            "backends": list(BACKENDS), "threads": None, "timer": None, "reps": None, "warmup": None,
            "out": str(RESULTS / "kernels.csv"), "plot": True}


def peak_bandwidth(name: str) -> float | None:
    return next((bw for key, bw in PEAK_BANDWIDTH if key in name), None)


# --------------------------------------------------------------------------------------------------- cases
def make_case(op: str, M: int, V: int, D: int, dtype: torch.dtype, device: torch.device):
    """(inputs needing grad, extra inputs, upstream grad, fn(*inputs, *extra), ideal bytes per mode, flops per mode)."""
    gen = torch.Generator(device=device).manual_seed(0)
    size = torch.tensor([], dtype=dtype).element_size()
    if op == "softmax_embed":
        y = 2 * torch.randn(M, V, device=device, dtype=dtype, generator=gen)
        W = torch.randn(V, D, device=device, dtype=dtype, generator=gen) / D**0.5
        G = torch.randn(M, D, device=device, dtype=dtype, generator=gen)
        fwd_bytes = size * (M * V + V * D + M * D)
        bwd_bytes = size * (M * V + V * D + 2 * M * D + M * V + V * D)  # read y, W, G, e; write dy, dW
        flops = {"fwd": 2 * M * V * D, "bwd": 4 * M * V * D, "full": 6 * M * V * D}
        return (y, W), (), G, {"fwd": fwd_bytes, "bwd": bwd_bytes, "full": fwd_bytes + bwd_bytes}, flops
    y = torch.randn(M, V, device=device, dtype=dtype, generator=gen)
    g = torch.randn(M, V, device=device, dtype=dtype, generator=gen)
    alpha = torch.tensor(0.1, device=device, dtype=torch.float32)
    G = torch.randn(M, V, device=device, dtype=dtype, generator=gen)
    fwd_bytes = 3 * size * M * V  # read y, g; write out
    bwd_bytes = 3 * size * M * V  # read grad, g; write dg (dy is the incoming grad)
    return (y, g, alpha), (), G, {"fwd": fwd_bytes, "bwd": bwd_bytes, "full": fwd_bytes + bwd_bytes}, None


def op_fn(op: str, backend: str) -> Callable:
    if op == "softmax_embed":
        ref = softmax_embed_reference
        tri = softmax_embed_triton
    else:
        def ref(y, g, a):
            return candidate_update_reference(y, g, a, grad_clamp=1.0)

        def tri(y, g, a):
            return candidate_update_triton(y, g, a, 1.0)
    if backend == "eager":
        return ref
    if backend == "compile":
        return torch.compile(ref, dynamic=False)
    return tri


def mode_fn(fn: Callable, inputs: tuple, G: torch.Tensor, mode: str) -> Callable[[], object]:
    if mode == "fwd":
        detached = tuple(t.detach() for t in inputs)

        def run():
            with torch.no_grad():
                return fn(*detached)
        return run
    leaves = tuple(t.detach().requires_grad_() for t in inputs)
    if mode == "full":
        return lambda: torch.autograd.grad(fn(*leaves), leaves, G)
    out = fn(*leaves)
    return lambda: torch.autograd.grad(out, leaves, G, retain_graph=True)


def timed(run: Callable[[], object], reps: int, warmup: int, device: torch.device, timer: str) -> dict[str, float]:
    """Median / p20 / p80 (ms) and peak memory (MB) of ``run``: ``do_bench`` (CUDA) or one sync per call."""
    if timer == "sync":
        return measure_step(run, reps, device, warmup=warmup)
    from triton.testing import do_bench

    memory = measure_step(run, 1, device, warmup=warmup)  # peak memory of one call (and the warm-up)
    median, p20, p80 = do_bench(run, warmup=25, rep=max(100, 5 * reps), quantiles=[0.5, 0.2, 0.8])
    return {"median_ms": median, "p20_ms": p20, "p80_ms": p80, "peak_mb": memory["peak_mb"]}


# --------------------------------------------------------------------------------------------------- main
def main(cfg: DictConfig) -> None:
    args = plain_options(cfg, lists=("V", "D", "M", "ops", "modes", "backends"), flags=("plot",),
                         positive=("V", "D", "M", "reps", "warmup", "threads"),
                         choices={"preset": sorted(PRESETS), "dtype": ("float32", "bfloat16", "float16"), "ops": OPS,
                                  "modes": MODES, "backends": BACKENDS, "timer": ("do_bench", "sync")})
    args.out = Path(args.out)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.threads or device.type == "cpu":
        torch.set_num_threads(args.threads or 1)
    preset = PRESETS[args.preset or ("gpu" if device.type == "cuda" else "cpu")]
    Vs, Ds, Ms = args.V or preset["V"], args.D or preset["D"], args.M or preset["M"]
    reps, warmup = args.reps or preset["reps"], args.warmup or preset["warmup"]
    dtype = getattr(torch, args.dtype or ("bfloat16" if device.type == "cuda" else "float32"))
    args.timer = args.timer or ("do_bench" if device.type == "cuda" and triton_status(device)[0] else "sync")
    usable, why = triton_status(device)
    triton_note = "" if usable and not interpreter_on() else (
        f"skipped: {why}" if not usable else "skipped: TRITON_INTERPRET=1 (interpreter timings are meaningless)")
    env = environment(device)
    name = env["device"]
    bw = peak_bandwidth(name) if device.type == "cuda" else None
    dtype_name = str(dtype).removeprefix("torch.")
    print(f"device: {name}; torch {env['torch']}, triton {env['triton']}; dtype {dtype_name}; "
          f"reps {reps}, warmup {warmup}; timer {args.timer}")
    if triton_note:
        print(f"NOTE: Triton rows {triton_note}")
    rows = []
    for op in args.ops:
        for M in Ms:
            for D in (Ds if op == "softmax_embed" else [0]):
                for V in Vs:
                    shape_rows = bench_shape(op, M, V, D, dtype, device, args, reps, warmup, triton_note, bw)
                    append_csv(args.out, [dict(row, dtype=dtype_name) for row in shape_rows], device, FIELDS)
                    rows += shape_rows
    print(f"appended {len(rows)} rows to {args.out}")
    if args.plot:
        plot(rows, args.out.with_name("kernels_speedup.png"), name)


def bench_shape(op, M, V, D, dtype, device, args, reps, warmup, triton_note, bw) -> list[dict]:
    inputs, _, G, ideal_bytes, flops = make_case(op, M, V, D, dtype, device)
    torch._dynamo.reset()
    rows, eager_out = [], None
    for backend in args.backends:
        fn = op_fn(op, backend)
        for mode in args.modes:
            row = dict(op=op, mode=mode, backend=backend, M=M, V=V, D=D or "", note="")
            if backend == "triton" and triton_note:
                row["note"] = triton_note
            else:
                try:
                    timing = timed(mode_fn(fn, inputs, G, mode), reps, warmup, device, args.timer)
                    med = timing["median_ms"]
                    row.update({k: f"{v:.4f}" for k, v in timing.items() if k != "peak_mb"})
                    row["peak_mb"] = f"{timing['peak_mb']:.1f}"
                    gbps = ideal_bytes[mode] / (med * 1e-3) / 1e9
                    row["gbytes_per_s"] = f"{gbps:.2f}"
                    row["peak_bw_frac"] = "" if bw is None else f"{gbps * 1e9 / bw:.3f}"
                    row["tflops"] = "" if flops is None else f"{flops[mode] / (med * 1e-3) / 1e12:.3f}"
                    if mode == "fwd":
                        with torch.no_grad():
                            out = fn(*inputs).float()
                        eager_out = out if backend == "eager" else eager_out
                        if eager_out is not None and backend != "eager":
                            row["max_abs_err_vs_eager"] = f"{(out - eager_out).abs().max().item():.3g}"
                except torch.cuda.OutOfMemoryError:
                    row["note"] = "OOM"
                    torch.cuda.empty_cache()
            rows.append(row)
            print(f"{op:16s} {mode:4s} {backend:7s} M={M:<6d} V={V:<7d} D={D:<5d} "
                  f"median {row.get('median_ms', '-'):>10s} ms  p20 {row.get('p20_ms', '-'):>10s}  "
                  f"p80 {row.get('p80_ms', '-'):>10s}  {row.get('gbytes_per_s', '-'):>8s} GB/s "
                  f"{row.get('tflops', '') or '':>7s} TFLOP/s {row['note']}")
    return rows


def plot(rows: list[dict], path: Path, device: str) -> None:
    plt = pyplot()
    ops = sorted({r["op"] for r in rows})
    fig, axes = plt.subplots(1, len(ops), figsize=(6 * len(ops), 4), squeeze=False)
    for ax, op in zip(axes[0], ops, strict=True):
        timed = [r for r in rows if r["op"] == op and r["mode"] == "full" and r.get("median_ms")]
        eager = {(r["M"], r["D"], r["V"]): float(r["median_ms"]) for r in timed if r["backend"] == "eager"}
        for backend in ("compile", "triton"):
            for M, D in sorted({(r["M"], r["D"]) for r in timed if r["backend"] == backend}, key=str):
                pts = sorted((r["V"], eager[(M, D, r["V"])] / float(r["median_ms"])) for r in timed
                             if r["backend"] == backend and (r["M"], r["D"]) == (M, D) and (M, D, r["V"]) in eager)
                if pts:
                    label = f"{backend} M={M}" + (f" D={D}" if D else "")
                    ax.plot(*zip(*pts, strict=True), marker="o", label=label)
        ax.axhline(1.0, color="grey", lw=0.8, ls="--")
        ax.set_xscale("log", base=2)
        ax.set(title=f"{op} (fwd+bwd)", xlabel="V (vocabulary)", ylabel="speed-up over eager reference")
        ax.legend(fontsize=7)
    fig.suptitle(device, fontsize=9)
    save_figure(fig, path)
    print(f"plot: {path}")

