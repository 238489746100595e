"""Prefix consistency: in a causal model the outputs at positions < t do not depend on how long the sequence is.

Teacher-forced exact match equals greedy-decoding accuracy only then. Checked for every causal mixer as configured
(``configs/model/mixer``, task-dependent defaults filled by the builder), for every objective on the addition task
with Hyena, and ``task.max_len`` (what the builder gives Hyena as ``l_max``) bounds every batch of every task.
"""

import pickle

import numpy as np
import pytest
import torch

from ebt.tasks.text import Text
from ebt.tasks.tokenized_text import TokenizedText
from ebt.training.build import build_lit_model, build_task, instantiate, with_task_defaults
from tests.utils import compose_config, declared_overrides, group_options

DIM = 32
CUTS = (1, 2, 5, 9, 16)


@pytest.mark.parametrize("option", group_options("model/mixer"))
def test_causal_mixer_output_on_a_prefix_is_the_prefix_of_the_output(option, tmp_path):
    cfg = compose_config([f"model/mixer={option}", f"model.dim={DIM}"], tmp_path)
    task = build_task(cfg)  # addition: max_len 17
    torch.manual_seed(0)
    mixer = with_task_defaults(instantiate(cfg.model.mixer), task)(DIM, causal=True).double().eval()
    x = torch.randn(2, task.max_len, DIM, dtype=torch.float64)
    full = mixer(x)  # (B, N, C)
    for t in CUTS:
        torch.testing.assert_close(mixer(x[:, :t]), full[:, :t], atol=1e-10, rtol=0, msg=f"{option}, cut at {t}")


def _cut(batch: dict[str, torch.Tensor], t: int) -> dict[str, torch.Tensor]:
    return {k: v[:, :t] for k, v in batch.items()}


TOKENS_OBJECTIVES = [o for o in group_options("model/objective") if o != "diffusion"]  # diffusion: continuous only


@pytest.mark.parametrize("objective", TOKENS_OBJECTIVES)
def test_hyena_model_predictions_do_not_depend_on_later_length(objective, tmp_path):
    """Predictions (logits after thinking, for the EBT) at positions < t are unchanged when the sequence is cut at t."""
    cfg = compose_config([f"model/objective={objective}", "model/mixer=hyena", f"model.dim={DIM}", "kernels=torch"],
                         tmp_path)
    task = build_task(cfg)
    torch.manual_seed(0)
    model = build_lit_model(cfg, task).objective.double().eval()
    batch = task.make_batch("ood", 0, 3)  # the longest sequences (max_len tokens)
    if hasattr(model, "think"):  # EBT: a fixed initial candidate instead of random noise
        init = 0.1 * torch.randn(*batch["targets"].shape, task.vocab_size, dtype=torch.float64)

        def predict(b: dict[str, torch.Tensor]) -> torch.Tensor:
            return model.think(b, steps=model.steps, init=init[:, : b["targets"].shape[1]]).candidates[-1].detach()
    else:
        predict = model.predict
    full = predict(batch)  # (B, T, V)
    for t in CUTS:
        torch.testing.assert_close(predict(_cut(batch, t)), full[:, :t], atol=1e-10, rtol=0, msg=f"cut at {t}")


# ----- task.max_len ------------------------------------------------------------------------------------------------


def _fake_mnist(root) -> list[str]:
    """Tiny MNIST idx files (12 train, 5 test images of 28x28)."""
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 12), ("t10k", 5)):
        for kind, array in (("images", rng.integers(0, 256, (n, 28, 28))), ("labels", rng.integers(0, 10, n))):
            header = bytes([0, 0, 8, array.ndim]) + np.array(array.shape, dtype=">i4").tobytes()
            (root / f"{prefix}-{kind}-idx{array.ndim}-ubyte").write_bytes(header + array.astype(np.uint8).tobytes())
    return [f"data.task.root={root}", "data.task.val_size=2"]


def _fake_cifar10(root) -> list[str]:
    """Tiny CIFAR-10 pickles (3 images per batch)."""
    rng = np.random.default_rng(0)
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        batch = {b"data": rng.integers(0, 256, (3, 3072), dtype=np.uint8), b"labels": rng.integers(0, 10, 3).tolist()}
        (root / name).write_bytes(pickle.dumps(batch))
    return [f"data.task.root={root}", "data.task.val_size=3"]


STAND_INS = {"mnist": _fake_mnist, "cifar10": _fake_cifar10}  # data options that otherwise need downloaded files
VARIANTS = {  # options whose length depends on more than the defaults show
    "addition": [["data.task.n_digits=2", "data.task.ood_digits=7"]],
    "assoc_recall": [["data.task.seq_len=33", "data.task.ood_seq_len=100"]],
    "icl_regression": [["data.task.ood_points=15"], ["data.task.format=paired", "data.task.ood_points=20"],
                       ["data.task.format=paired", "data.task.n_points=9", "data.task.ood_points=4"]],
    "text": [["data.task.seq_len=64"]],
    "digits": [["data.task.patch=2"], ["data.task.upsample=2", "data.task.patch=4"]],
    "digits_denoise": [["data.task.patch=2"]],
    "mnist": [["data.task.patch=7"]],
    "cifar10": [["data.task.patch=8"]],
}
CASES = [pytest.param(option, overrides, id=f"{option}-{i}") for option in group_options("data")
         for i, overrides in enumerate([[], *VARIANTS.get(option, [])])]


def _tokens(batch: dict[str, torch.Tensor]) -> int:
    return (batch["input_ids"] if "input_ids" in batch else batch["inputs"]).shape[1]


@pytest.mark.parametrize(("option", "overrides"), CASES)
def test_task_max_len_is_the_longest_sequence_of_any_split(option, overrides, tmp_path):
    extra = [o for o in declared_overrides("data", option) if o != "SKIP"]
    if option in STAND_INS:
        extra += STAND_INS[option](tmp_path)
    elif "SKIP" in declared_overrides("data", option):
        pytest.skip(f"data={option} needs files on disk and has no stand-in here")
    task = build_task(compose_config([f"data={option}", *extra, *overrides], tmp_path / "run"))
    text_like = isinstance(task, Text | TokenizedText)  # the text tasks have no test split
    splits = {"train", *task.eval_splits} | (set() if text_like else {"test"})
    lengths = {split: max(_tokens(task.make_batch(split, i, 3)) for i in range(2)) for split in splits}
    assert task.max_len is not None and max(lengths.values()) == task.max_len, (task.max_len, lengths)
