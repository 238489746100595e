"""Token-mixer scaling: forward + backward time and peak memory versus sequence length.

    python scripts/bench_mixers.py [lengths=[256,512,...,16384]] [cpu_max_len=4096] [dim=320] [batch=1]
                                   [mixers=[attention,moh_dense,moh_gather,pool,hyena]] [active=[0.5,0.75,0.9]]

Each mixer runs alone (causal, as in a language model) on ``(batch, N, dim)``: ``mixer(x).square().mean()`` and
its backward. Attention and MoH use ``n_heads = dim // 16`` heads of 16 channels; MoH has 2 shared heads and
``top_k`` routed heads chosen so that ``active`` of all heads are on (20 heads: 50 % = 2 + 8, 75 % = 2 + 13,
90 % = 2 + 16). ``moh_dense`` computes every head and masks the unselected ones (the reference implementation);
``moh_gather`` computes each routed head only for the queries that chose it. Pool (PoolFormer) is imported lazily
and skipped if ``alt_arch.mixers.pool`` is absent. Hyena is order 2 with FFT long convolutions.

Time: median (and p20/p80) of ``reps`` runs after a warm-up and a memory run; peak memory above what was held
before the run (CUDA allocator, or the growth of the resident set on CPU): :func:`ebt.benchmarks.measure.measure_step`.
On CPU lengths above ``cpu_max_len`` are skipped; ``threads``: CPU threads (shared machines: 1); ``device``: auto,
cpu or cuda. Appends to ``bench_results/mixers.csv`` and writes ``bench_results/mixers.png`` (log-log).
"""

from pathlib import Path

import torch
from omegaconf import DictConfig

from ebt.analysis.plotting import pyplot, save_figure
from ebt.benchmarks.measure import RESULTS, append_csv, environment, measure_step
from ebt.options import plain_options

HEAD_DIM = 16
SHARED = 2
MIXERS = ("attention", "moh_dense", "moh_gather", "pool", "hyena")
DEFAULTS = {"lengths": [256, 512, 1024, 2048, 4096, 8192, 16384], "cpu_max_len": 4096, "mixers": list(MIXERS),
            "active": [0.5, 0.75, 0.9], "dim": 320, "batch": 1, "reps": 5, "threads": 1, "device": "auto"}


def build(name: str, dim: int, active: float | None, n: int):
    """The mixer called ``name`` (None when it is not available in this checkout)."""
    from alt_arch.mixers.attention import Attention
    from alt_arch.mixers.hyena import Hyena
    from alt_arch.mixers.moh import MoHAttention

    heads = dim // HEAD_DIM
    if name == "attention":
        return Attention(dim, causal=True, n_heads=heads)
    if name.startswith("moh_"):
        top_k = max(1, round(active * heads) - SHARED)
        return MoHAttention(dim, causal=True, n_heads=heads, shared_heads=SHARED, top_k=top_k,
                            routed_compute=name.removeprefix("moh_"))
    if name == "hyena":
        return Hyena(dim, causal=True, l_max=n)
    if name == "pool":
        try:
            from alt_arch.mixers.pool import Pool
        except ImportError:
            return None
        return Pool(dim, causal=True)
    raise ValueError(f"unknown mixer {name!r}; choose from attention, moh_dense, moh_gather, pool, hyena")


def measure(name: str, n: int, dim: int, batch: int, active: float | None, reps: int, device: str) -> dict | None:
    torch.manual_seed(0)
    mixer = build(name, dim, active, n)
    if mixer is None:
        return None
    mixer = mixer.to(device)
    x = torch.randn(batch, n, dim, device=device, requires_grad=True)

    def step() -> None:
        mixer(x).square().mean().backward()
        x.grad = None
        mixer.zero_grad(set_to_none=True)

    return measure_step(step, reps, device)


def plot(rows: list[dict], path: Path, device: str) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    labels = sorted({r["label"] for r in rows})
    for label in labels:
        pts = sorted((r["seq_len"], r["median_ms"], r["peak_mb"]) for r in rows if r["label"] == label)
        xs = [p[0] for p in pts]
        axes[0].plot(xs, [p[1] for p in pts], marker="o", label=label)
        axes[1].plot(xs, [max(p[2], 1e-2) for p in pts], marker="o", label=label)
    for ax, title in zip(axes, ["forward + backward time (ms)", "peak memory (MB)"], strict=True):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length N")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7)
    r = rows[0]
    fig.suptitle(f"causal mixers, dim {r['dim']}, batch {r['batch']}, {environment(device)['device']}")
    save_figure(fig, path)


def main(cfg: DictConfig) -> None:
    args = plain_options(cfg, lists=("lengths", "mixers", "active"),
                         choices={"mixers": MIXERS, "device": ("auto", "cpu", "cuda")},
                         positive=("lengths", "cpu_max_len", "dim", "batch", "reps", "threads"))
    torch.set_num_threads(args.threads)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    lengths = [n for n in args.lengths if device == "cuda" or n <= args.cpu_max_len]
    info = {"threads": args.threads, "dim": args.dim, "batch": args.batch}
    rows = []
    for name in args.mixers:
        for active in (args.active if name.startswith("moh_") else [None]):
            label = name if active is None else f"{name} {round(100 * active)}%"
            for n in lengths:
                result = measure(name, n, args.dim, args.batch, active, args.reps, device)
                if result is None:
                    if name == "pool":
                        print("  pool: alt_arch.mixers.pool not available, skipped", flush=True)
                        break
                    continue
                row = info | {"mixer": name, "active": active, "label": label, "seq_len": n} | {
                    k: round(v, 3) for k, v in result.items()}
                rows.append(row)
                print(f"{label:18s} N={n:6d}  {row['median_ms']:10.2f} ms  (p20 {row['p20_ms']:.2f}, "
                      f"p80 {row['p80_ms']:.2f})  peak {row['peak_mb']:9.1f} MB", flush=True)
    if not rows:
        return
    path = append_csv(RESULTS / "mixers.csv", rows, device)
    plot(rows, RESULTS / "mixers.png", device)
    print(f"wrote {path} and {RESULTS / 'mixers.png'}")
