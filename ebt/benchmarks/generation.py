"""Generation speed: the key/value cache against re-running the window, predictor and EBT, per prompt length.

    python scripts/bench_generate.py [prompts=[16,128,512]] [window=256] [new_tokens=16] [steps=[2,4]]
                                     [best_of=[1,4]] [dim=128] [layers=2] [vocab=4096] [reps=3] [out=DIR]

Models: the default configuration's predictor and EBT (``model.dim``, ``n_layers``, attention) on a tokens task of
``vocab`` ids and a context window of ``window`` tokens, randomly initialised (a token's cost does not depend on the
weights; ``energy_tol`` is off), in float32 on one CPU thread (``threads``). Each row generates ``new_tokens`` greedy
tokens after a random prompt of the given length, through :func:`ebt.analysis.tools.generate.generate_ids` with the
:class:`~ebt.analysis.tools.decoding.CachedDecoder` (``slide=token``: exact) and the
:class:`~ebt.analysis.tools.decoding.WindowedDecoder`; the two paths of a row run in turns, ``reps`` rounds.

With ``compile=true`` (default) the EBT rows also run the cached path with the thinking step compiled
(``generate.py compile=true``: torch.compile with dynamic shapes); ``warmup_s`` is the time of each path's two warm-up
tokens, which for that path includes the compilation (once per process and candidate count).

Columns: ``tokens_per_s`` (median over rounds of ``new_tokens`` / wall time, the first token's prefill included),
``first_ms`` (median time to the first token: the prompt's prefill and thinking), ``token_ms`` (median time of each
later token), ``speedup`` (cached over windowed tokens/s) and ``same_tokens`` (whether both paths
wrote the same tokens in every round). A prompt longer than the window starts full, so every token slides the
window: the cache is rebuilt per token there (``slide=token``), which is what the ``512`` rows measure.

Writes ``generation.csv`` and ``generation.png`` (tokens/s against prompt length, cached solid, windowed dashed) to
``out`` (default ``bench_results/generation``; the committed results: ``out=docs/generation``, shown in
``docs/generation.md``).
"""

import statistics
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from omegaconf import DictConfig

from ebt.analysis.doc_tables import generation_speed
from ebt.analysis.plotting import markdown_table, pyplot, save_figure, write_csv
from ebt.analysis.tools.decoding import CachedDecoder, Thinking, WindowedDecoder
from ebt.analysis.tools.generate import Sampling, generate_ids
from ebt.benchmarks.measure import RESULTS, environment
from ebt.options import plain_options
from ebt.tasks.random_tokens import RandomTokens
from ebt.training.build import build_objective
from ebt.training.config import compose_train

DEFAULTS = {"prompts": [16, 128, 512], "window": 256, "new_tokens": 16, "steps": [2, 4], "best_of": [1, 4],
            "dim": 128, "layers": 2, "vocab": 4096, "reps": 3, "threads": 1, "compile": True,
            "out": str(RESULTS / "generation")}
COLUMNS = ["model", "prompt", "path", "tokens_per_s", "first_ms", "token_ms", "speedup", "same_tokens"]


def paths(thinking: Thinking, compile: bool) -> dict[str, Callable]:
    """The decoders of one row: cached, windowed and (an EBT with ``compile``) cached with the compiled step."""
    out = {"cached": CachedDecoder, "windowed": WindowedDecoder}
    if compile:
        out["compiled"] = lambda net, window, t: CachedDecoder(net, window, replace(t, compile=True))
    return out


def build(objective: str, args) -> torch.nn.Module:
    """A random model of the benchmark's size (``objective``: predict or ebt)."""
    task = RandomTokens(args.vocab, args.window)
    task.max_len = args.window
    torch.manual_seed(0)
    cfg = compose_train([f"model.dim={args.dim}", f"model.backbone.n_layers={args.layers}",
                         f"model/objective={objective}"])
    return build_objective(cfg.model, task).eval()


def models(args) -> dict[str, tuple[torch.nn.Module, Thinking]]:
    """``predict`` and one EBT row per (steps, best_of)."""
    out = {"predict": (build("predict", args), Thinking())}
    ebt = build("ebt", args)
    for steps in args.steps:
        for best_of in args.best_of:
            out[f"ebt S={steps} N={best_of}"] = (ebt, Thinking(steps=steps, best_of=best_of))
    return out


def timed_generation(decoder, prompt: list[int], n: int) -> tuple[list[int], list[float]]:
    """Greedy tokens after ``prompt`` and the seconds from the start to each of them."""
    stamps: list[float] = []
    torch.manual_seed(0)
    start = time.perf_counter()
    drawn = generate_ids(decoder, prompt, n, Sampling(temperature=0), torch.Generator().manual_seed(0),
                         on_token=lambda i, token: stamps.append(time.perf_counter() - start))
    return [t.id for t in drawn], stamps


def measure_row(net, thinking: Thinking, prompt: list[int], args) -> dict[str, dict]:
    """Every path on one prompt, in turns for ``reps`` rounds, after a warm-up of two tokens each (``warmup_s``; the
    compiled path compiles there)."""
    decoders = paths(thinking, args.compile and net.thinks)
    results: dict[str, dict] = {path: {"rates": [], "first": [], "later": [], "tokens": []} for path in decoders}
    for path, decoder in decoders.items():  # warm-up: lazy initialisation, RoPE tables, the allocator, compilation
        started = time.perf_counter()
        timed_generation(decoder(net, args.window, thinking), prompt, 2)
        results[path]["warmup_s"] = time.perf_counter() - started
    for _ in range(args.reps):
        for path, decoder in decoders.items():
            ids, stamps = timed_generation(decoder(net, args.window, thinking), prompt, args.new_tokens)
            r = results[path]
            r["rates"].append(len(ids) / stamps[-1])
            r["first"].append(stamps[0] * 1e3)
            r["later"] += [(b - a) * 1e3 for a, b in zip(stamps, stamps[1:], strict=False)]
            r["tokens"].append(ids)
    return results


def rows_of(name: str, prompt_len: int, results: dict[str, dict]) -> list[dict]:
    rates = {path: statistics.median(r["rates"]) for path, r in results.items()}
    return [{"model": name, "prompt": prompt_len, "path": path, "tokens_per_s": round(rates[path], 2),
             "first_ms": round(statistics.median(r["first"]), 2),
             "token_ms": round(statistics.median(r["later"]), 2) if r["later"] else float("nan"),
             "speedup": round(rates[path] / rates["windowed"], 2),
             "same_tokens": r["tokens"] == results["windowed"]["tokens"],
             "warmup_s": round(r["warmup_s"], 2)} for path, r in results.items()]


def plot(rows: list[dict], path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    names = list(dict.fromkeys(r["model"] for r in rows))
    for i, name in enumerate(names):
        for kind, style in (("cached", "-"), ("windowed", "--"), ("compiled", ":")):
            points = [(r["prompt"], r["tokens_per_s"]) for r in rows if r["model"] == name and r["path"] == kind]
            if not points:
                continue
            ax.plot(*zip(*points, strict=True), style, marker="o", color=f"C{i}",
                    label=f"{name}, {kind}")
    ax.set(xscale="log", yscale="log", xlabel="prompt length (tokens)", ylabel="tokens / s",
           title="generation: cache (solid), compiled (dotted), window re-run (dashed)")
    ax.legend(fontsize=7, ncol=2)
    save_figure(fig, path)


def main(cfg: DictConfig) -> list[dict]:
    args = plain_options(cfg, lists=("prompts", "steps", "best_of"),
                         positive=("prompts", "window", "new_tokens", "steps", "best_of", "dim", "layers", "vocab",
                                   "reps", "threads"), flags=("compile",))
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    rows = []
    for name, (net, thinking) in models(args).items():
        for length in args.prompts:
            prompt = torch.randint(0, args.vocab, (length,), generator=generator).tolist()
            new = rows_of(name, length, measure_row(net, thinking, prompt, args))
            rows += new
            print("\n".join(markdown_table(new, COLUMNS).splitlines()[2:]), flush=True)
    env = environment("cpu")
    print(f"{env['device']}, {args.threads} thread(s): d={args.dim}, {args.layers} layers, vocab {args.vocab}, "
          f"window {args.window}, {args.new_tokens} new tokens, median of {args.reps} rounds")
    out = Path(args.out)
    write_csv([{**r, "dim": args.dim, "layers": args.layers, "vocab": args.vocab, "window": args.window,
                "new_tokens": args.new_tokens, "threads": args.threads, "device": env["device"],
                "torch": env["torch"], "git_sha": env["git_sha"]} for r in rows], out / "generation.csv")
    plot(rows, out / "generation.png")
    print(generation_speed([{k: str(v) for k, v in r.items()} for r in rows]))
    print(f"wrote {out / 'generation.csv'} and {out / 'generation.png'}")
    return rows
