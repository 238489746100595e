"""Image tasks: the digits split, tokenisation, deterministic batches, MNIST/CIFAR-10 files on disk, errors."""

import gzip
import pickle
import re

import numpy as np
import pytest
import torch

from ebt.errors import ConfigError, DataError
from ebt.tasks.images import CIFAR10, MNIST, Digits, read_idx


@pytest.fixture(scope="module")
def digits():
    return Digits()


def test_digits_split_sizes_disjoint_and_deterministic(digits):
    assert {s: digits.split_size(s) for s in ("train", "val", "test", "ood")} == {
        "train": 1257, "val": 270, "test": 270, "ood": 270}
    again = Digits(seed=5)  # the training seed does not move the split
    for split in ("train", "val", "test"):
        assert np.array_equal(digits.images[split], again.images[split])
    flat = {s: {digits.images[s][i].tobytes() for i in range(digits.split_size(s))} for s in ("train", "val")}
    assert len(flat["val"] - flat["train"]) > 250  # (sklearn digits holds a few duplicate images)
    assert not np.array_equal(Digits(split_seed=1).images["val"], digits.images["val"])


def test_digits_batches(digits):
    b = digits.make_batch("train", 3, 16)
    assert b["inputs"].shape == (16, 64, 1) and b["inputs"].dtype == torch.float32
    assert b["targets"].shape == (16,) and b["targets"].dtype == torch.int64
    assert b["inputs"].min() >= 0.0 and b["inputs"].max() <= 1.0 and b["inputs"].max() == 1.0
    assert torch.equal(b["inputs"], digits.make_batch("train", 3, 16)["inputs"])
    assert not torch.equal(b["inputs"], digits.make_batch("train", 4, 16)["inputs"])
    assert digits.kind == "classes" and digits.num_classes == 10 and digits.spatial_shape == (8, 8)


def test_eval_batches_cover_the_split_in_order(digits):
    seen = torch.cat([digits.make_batch("val", i, 135)["targets"] for i in range(2)])
    assert torch.equal(seen, torch.from_numpy(digits.labels["val"]))
    wrapped = digits.make_batch("val", 1, 200)["targets"]  # rows 200..399 mod 270
    assert torch.equal(wrapped, torch.from_numpy(digits.labels["val"][np.arange(200, 400) % 270]))


def test_ood_is_the_shifted_test_set(digits):
    test, ood = digits.make_batch("test", 0, 10), digits.make_batch("ood", 0, 10)
    assert torch.equal(test["targets"], ood["targets"])
    diff = ood["inputs"] - test["inputs"]
    assert diff.abs().mean() > 0.05 and ood["inputs"].min() >= 0.0 and ood["inputs"].max() <= 1.0
    assert torch.equal(ood["inputs"][3], digits.make_batch("ood", 1, 3)["inputs"][0])  # noise fixed per image
    shifted = Digits(ood="shift")
    grid = shifted.make_batch("ood", 0, 4)["inputs"].reshape(4, 8, 8)
    orig = shifted.make_batch("test", 0, 4)["inputs"].reshape(4, 8, 8)
    assert torch.equal(grid[:, 1:, 1:], orig[:, :-1, :-1]) and not grid[:, 0].any() and not grid[:, :, 0].any()


def test_upsample_and_patches():
    task = Digits(upsample=2, patch=4)
    assert task.spatial_shape == (4, 4) and task.input_dim == 16
    tokens = task.make_batch("val", 0, 2)["inputs"]  # (2, 16, 16)
    pixels = task.pixels("val", np.arange(2)).repeat_interleave(2, -2).repeat_interleave(2, -1)  # (2, 1, 16, 16)
    # token (row 1, col 2) = the 4x4 patch at pixels [4:8, 8:12], flattened row-major
    torch.testing.assert_close(tokens[:, 1 * 4 + 2], pixels[:, 0, 4:8, 8:12].reshape(2, 16))
    with pytest.raises(ConfigError, match="does not divide"):
        Digits(patch=3)
    with pytest.raises(ConfigError, match="ood"):
        Digits(ood="blur")


def _write_idx(path, array, compress):
    header = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, dtype=">i4").tobytes()
    opener = gzip.open if compress else open
    with opener(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.mark.parametrize("compress", [False, True])
def test_fake_mnist_files_load(tmp_path, compress):
    rng = np.random.default_rng(0)
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    suffix = ".gz" if compress else ""
    train_x, test_x = rng.integers(0, 256, (12, 28, 28)), rng.integers(0, 256, (5, 28, 28))
    train_y, test_y = rng.integers(0, 10, 12), rng.integers(0, 10, 5)
    for name, arr in [("train-images-idx3-ubyte", train_x), ("train-labels-idx1-ubyte", train_y),
                      ("t10k-images-idx3-ubyte", test_x), ("t10k-labels-idx1-ubyte", test_y)]:
        _write_idx(raw / f"{name}{suffix}", arr, compress)
    task = MNIST(root=str(tmp_path), val_size=2, patch=4)
    assert (task.split_size("train"), task.split_size("val"), task.split_size("test")) == (10, 2, 5)
    assert task.spatial_shape == (7, 7) and task.input_dim == 16
    val = task.make_batch("val", 0, 2)
    assert torch.equal(val["targets"], torch.from_numpy(train_y[10:]))
    assert torch.allclose(val["inputs"][0, 0], torch.from_numpy(train_x[10, :4, :4].reshape(-1) / 255.0).float())
    assert task.make_batch("ood", 0, 5)["inputs"].shape == (5, 49, 16)


def test_fake_cifar_files_load(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    batches = {}
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        data, labels = rng.integers(0, 256, (3, 3072), dtype=np.uint8), rng.integers(0, 10, 3).tolist()
        batches[name] = (data, labels)
        with open(folder / name, "wb") as f:
            pickle.dump({b"batch_label": name.encode(), b"data": data, b"labels": labels}, f)
    task = CIFAR10(root=str(tmp_path), val_size=3, patch=1)
    assert (task.split_size("train"), task.split_size("val"), task.split_size("test")) == (12, 3, 3)
    assert task.spatial_shape == (32, 32) and task.input_dim == 3
    test = task.make_batch("test", 0, 3)
    data, labels = batches["test_batch"]
    assert test["targets"].tolist() == labels
    red, green = data[1, 5], data[1, 1024 + 5]  # pixel (0, 5): first plane red, second green
    torch.testing.assert_close(test["inputs"][1, 5, :2], torch.tensor([red, green]).float() / 255.0)


def test_missing_files_name_path_and_expected_files(tmp_path):
    nowhere = re.escape(str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match=f"{nowhere}.*train-images-idx3-ubyte.*t10k-labels-idx1-ubyte"):
        MNIST(root=str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match=f"{re.escape(str(tmp_path))}.*data_batch_1.*test_batch"):
        CIFAR10(root=str(tmp_path))


def test_corrupt_idx_file_is_a_data_error(tmp_path):
    bad = tmp_path / "x-idx1-ubyte"
    bad.write_bytes(bytes([1, 2, 3, 4]))
    with pytest.raises(DataError, match="magic"):
        read_idx(bad)
    truncated = tmp_path / "y-idx1-ubyte"
    truncated.write_bytes(bytes([0, 0, 8, 1]) + np.array([10], dtype=">i4").tobytes() + bytes(3))
    with pytest.raises(DataError, match="truncated"):
        read_idx(truncated)
