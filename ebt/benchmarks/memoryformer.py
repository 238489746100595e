"""MemoryFormer block vs a dense Transformer block: FLOPs per token, parameter memory and measured forward time.

    python scripts/bench_memoryformer.py [dims=[512,1024]] [seq_len=512] [batch=1] [reps=10] [tau=8] [head_dim=64]

Dense block: pre-norm attention (Q, K, V, O = nn.Linear d x d) + GELU MLP (d -> 4d -> d), the paper's Pythia
baseline. MemoryFormer block: Q, K, V = memory layers (``tau`` hash tables), no output projection, Memory Block FFN;
``dim // head_dim`` heads. FLOPs per token come from ``alt_arch.utils.forward_flops_per_token`` (2 x Linear params,
the memory layers' hash + look-up sum, causal attention ``2 T d``); "proj" is the same without the attention term.
Forward time (median, p20/p80, no grad, CPU, ``threads`` threads: on a shared 2-core machine 2 threads spin-wait)
and peak memory: :func:`ebt.benchmarks.measure.measure_step`. Appends rows to ``bench_results/memoryformer.csv`` and
writes ``bench_results/memoryformer.png``.
"""

from functools import partial
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import nn

from alt_arch.block import MetaFormerBlock
from alt_arch.linears.dense import dense
from alt_arch.linears.memory import MemoryMLP, memory
from alt_arch.mixers.attention import Attention
from alt_arch.mlp import GeluMLP
from alt_arch.utils import forward_flops_per_token
from ebt.analysis.plotting import pyplot, save_figure
from ebt.benchmarks.measure import RESULTS, append_csv, measure_step
from ebt.options import plain_options

DEFAULTS = {"dims": [512, 1024], "seq_len": 512, "batch": 1, "tau": 8, "head_dim": 64, "reps": 10, "threads": 1}


def build(kind: str, dim: int, n_heads: int, tau: int) -> nn.Module:
    norm = partial(nn.LayerNorm, eps=1e-5)
    if kind == "dense":
        return MetaFormerBlock(dim, mixer=Attention(dim, causal=True, linear=dense, n_heads=n_heads),
                               mlp=GeluMLP(dim, linear=dense), norm=norm)
    return MetaFormerBlock(dim, mixer=Attention(dim, causal=True, linear=partial(memory, tau=tau), n_heads=n_heads,
                                                out_proj=False),
                           mlp=MemoryMLP(dim, tau=tau), norm=norm)


def main(cfg: DictConfig) -> None:
    args = plain_options(cfg, lists=("dims",), positive=tuple(DEFAULTS))
    torch.set_num_threads(args.threads)
    rows = []
    for dim in args.dims:
        for kind in ("dense", "memoryformer"):
            torch.manual_seed(0)
            block = build(kind, dim, dim // args.head_dim, args.tau).eval()
            x = torch.randn(args.batch, args.seq_len, dim)
            with torch.no_grad():
                timing = measure_step(lambda block=block, x=x: block(x), args.reps, "cpu")
            params = sum(p.numel() for p in block.parameters())
            rows.append({
                "threads": args.threads, "dim": dim, "seq_len": args.seq_len, "batch": args.batch, "block": kind,
                "params_M": round(params / 1e6, 3), "param_MB_fp32": round(params * 4 / 2**20, 1),
                "flops_per_token_M": round(forward_flops_per_token(block, seq_len=args.seq_len) / 1e6, 3),
                "proj_flops_per_token_M": round(forward_flops_per_token(block, seq_len=0) / 1e6, 3),
                **{k: round(v, 2) for k, v in timing.items()},
            })
    path = append_csv(RESULTS / "memoryformer.csv", rows, "cpu")
    print(f"{'dim':>5} {'block':>13} {'params M':>9} {'MB fp32':>8} {'MFLOP/tok':>10} {'proj MFLOP/tok':>15} "
          f"{'median ms':>10} {'p20-p80 ms':>14}")
    for r in rows:
        print(f"{r['dim']:>5} {r['block']:>13} {r['params_M']:>9} {r['param_MB_fp32']:>8} "
              f"{r['flops_per_token_M']:>10} {r['proj_flops_per_token_M']:>15} {r['median_ms']:>10} "
              f"{r['p20_ms']:>6}-{r['p80_ms']:<7}")
    plot(rows, RESULTS / "memoryformer.png")
    print(f"appended to {path}")


def plot(rows: list[dict], path: Path) -> None:
    plt = pyplot()
    dims = sorted({r["dim"] for r in rows})
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
    for ax, key, label in zip(axes, ("proj_flops_per_token_M", "median_ms", "param_MB_fp32"),
                              ("projection + FFN MFLOP / token", "forward ms (CPU)", "parameters (MB, fp32)"),
                              strict=True):
        for offset, kind in ((-0.2, "dense"), (0.2, "memoryformer")):
            values = [next(r[key] for r in rows if r["dim"] == d and r["block"] == kind) for d in dims]
            ax.bar([i + offset for i in range(len(dims))], values, width=0.4, label=kind)
        ax.set_xticks(range(len(dims)), [f"d={d}" for d in dims])
        ax.set_title(label)
    axes[0].legend()
    save_figure(fig, path, dpi=100)
