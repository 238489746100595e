"""TokenFormer progressive scaling: ``python scripts/grow.py ckpt=PATH slots=+N [out=PATH] [seed=0]``.

Appends ``N`` zero-key parameter tokens to every Pattention of a ``scripts/train.py`` checkpoint (the function is
unchanged) and writes a checkpoint to resume from; it prints the exact overrides that continue training.
"""

import sys
from pathlib import Path

from ebt.errors import ConfigError
from ebt.training import config  # noqa: F401  (registers ${uid:})
from ebt.training.cli import run_reporting_errors

USAGE = "usage: python scripts/grow.py ckpt=PATH slots=+N [out=PATH] [seed=0]"
KEYS = {"ckpt", "slots", "out", "seed"}


def parse(argv: list[str]) -> dict[str, str]:
    args = {}
    for token in argv:
        key, sep, value = token.partition("=")
        if not sep or key not in KEYS:
            raise ConfigError(f"unknown argument {token!r}; {USAGE}")
        args[key] = value
    if "ckpt" not in args or "slots" not in args:
        raise ConfigError(f"ckpt= and slots= are required; {USAGE}")
    try:
        args["slots"] = int(args["slots"].lstrip("+"))
    except ValueError:
        raise ConfigError(f"slots={args['slots']!r} is not a number of parameter tokens to add; {USAGE}") from None
    return args


def main(argv: list[str]) -> None:
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__ + "\n" + USAGE)
        return
    args = parse(argv)
    import torch

    from ebt.analysis.growth import grow_checkpoint
    from ebt.training.checkpoint import atomic_write, load_checkpoint

    ckpt = Path(args["ckpt"])
    n_new, seed = args["slots"], int(args.get("seed", 0))
    out = Path(args.get("out") or ckpt.with_name(f"{ckpt.stem}-grown{n_new}.ckpt"))
    grown = grow_checkpoint(load_checkpoint(ckpt), n_new, seed=seed, path=str(ckpt))
    atomic_write(out, lambda f: torch.save(grown, f))
    info = grown["growth"][-1]
    model = grown["hyper_parameters"]["config"]["model"]
    overrides = [f"model.{g}.extra_slots={model[g]['extra_slots']}" for g in ("linear", "mlp")
                 if "extra_slots" in model[g]]
    print(f"grew {info['layers']} Pattention layers by {n_new} slots at step {info['step']} "
          f"(slots now {sorted(set(info['slots'].values()))})")
    print(f"wrote {out}")
    print("continue training with the run's overrides plus:\n  " + " ".join([*overrides, f"ckpt_path={out}",
                                                                        "trainer.max_steps=<total steps>"]))


if __name__ == "__main__":
    run_reporting_errors(main, sys.argv[1:])
