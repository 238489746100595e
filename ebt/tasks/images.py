"""Image classification tasks: scikit-learn digits (offline), MNIST and CIFAR-10 (read from disk).

Every image task is ``kind = "classes"``: a batch holds ``inputs`` (B, N, F_in) float tokens in [0, 1] and
``targets`` (B,) class indices. Tokens are non-overlapping ``patch x patch`` patches in row-major order,
each flattened to ``patch * patch * channels`` features (``patch=1``: one token per pixel), after an optional
nearest-neighbour ``upsample`` by an integer factor; ``spatial_shape = (H / patch, W / patch)``.

Splits (all fixed, independent of the training seed):

* ``digits``: the 1797 images of ``sklearn.datasets.load_digits`` (8x8, values 0..16, scaled to [0, 1]),
  permuted with ``split_seed`` and cut into 1257 train / 270 val / 270 test.
* ``mnist`` / ``cifar10``: the official training set minus its last ``val_size`` images is ``train``,
  those images are ``val``, the official test set is ``test``.
* ``ood`` (every task): the test images under a distribution shift, ``ood="noise"`` (default: additive
  Gaussian noise of standard deviation ``ood_noise`` on the [0, 1] scale, clipped to [0, 1], fixed per
  test image by ``split_seed``) or ``ood="shift"`` (every image moved one pixel right and one pixel down, zero fill).

Batches: ``train`` batch ``i`` samples rows with replacement from the task rng of ``(seed, "train", i)``;
evaluation batch ``i`` of size ``bs`` takes rows ``i*bs .. (i+1)*bs - 1`` modulo the split size, so
``eval_batches * eval_batch_size = split size`` covers the split exactly once.

On-disk formats (read with numpy; torchvision is not needed):

* MNIST (``data.task.root``, or its ``MNIST/raw`` subfolder): the idx files ``train-images-idx3-ubyte``,
  ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each optionally ``.gz``.
* CIFAR-10 (``data.task.root`` or its ``cifar-10-batches-py`` subfolder): the python pickles
  ``data_batch_1`` .. ``data_batch_5`` and ``test_batch`` (dicts with ``data`` (n, 3072) uint8 and
  ``labels``), read with :class:`DataUnpickler`, which builds numpy arrays, lists, dicts, bytes and strings only: a
  pickle that names anything else (code to run) is refused with one line, nothing is run.
"""

import gzip
import pickle
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

from ebt.errors import ConfigError, DataError
from ebt.tasks.base import Task, classification_sums
from ebt.tasks.metrics import Sums

try:
    from numpy._core.multiarray import _reconstruct
    from numpy._core.numeric import _frombuffer
except ImportError:  # numpy < 2
    from numpy.core.multiarray import _reconstruct
    from numpy.core.numeric import _frombuffer

OOD_KINDS = ("noise", "shift")


class ImageClassification(Task):
    """Shared tokenisation, batching and metrics; subclasses supply ``(n, C, H, W)`` images per split."""

    kind = "classes"
    metric = "acc"
    metric_mode = "max"
    causal = False

    def __init__(self, images: dict[str, np.ndarray], labels: dict[str, np.ndarray], *, num_classes: int,
                 scale: float, upsample: int = 1, patch: int = 1, ood: str = "noise", ood_noise: float = 0.2,
                 split_seed: int = 0, seed: int = 0) -> None:
        super().__init__(seed=seed)
        for name, value in (("upsample", upsample), ("patch", patch)):
            if value < 1:
                raise ConfigError(f"data.task.{name} must be >= 1, got {value}")
        if ood not in OOD_KINDS:
            raise ConfigError(f"data.task.ood={ood!r} is unknown; use one of {OOD_KINDS}")
        _, channels, height, width = images["train"].shape
        height, width = height * upsample, width * upsample
        if height % patch or width % patch:
            raise ConfigError(f"data.task.patch={patch} does not divide the {height}x{width} image "
                              f"(after upsample={upsample}); pick a divisor")
        self.images, self.labels, self.scale = images, labels, scale
        self.upsample, self.patch = upsample, patch
        self.num_classes = num_classes
        self.input_dim = patch * patch * channels
        self.spatial_shape = (height // patch, width // patch)
        self.max_len = self.spatial_shape[0] * self.spatial_shape[1]
        self.ood, self.ood_noise, self.split_seed = ood, ood_noise, split_seed

    def pixels(self, split: str, rows: np.ndarray) -> torch.Tensor:
        """Images ``rows`` of ``split`` as (B, C, H, W) floats in [0, 1]; ``ood`` = shifted test images."""
        source = "test" if split == "ood" else split
        x = torch.from_numpy(np.ascontiguousarray(self.images[source][rows])).float() / self.scale
        if split != "ood":
            return x
        if self.ood == "shift":
            return F.pad(x, (1, 0, 1, 0))[..., :-1, :-1]  # one pixel right and down
        # noise of each test image is fixed by (split_seed, row): the same whatever the batch size
        noise = np.stack([np.random.default_rng([self.split_seed, 2, int(r)]).normal(0.0, self.ood_noise,
                                                                                     size=x.shape[1:])
                          for r in rows])
        return (x + torch.from_numpy(noise).float()).clamp(0.0, 1.0)

    def split_size(self, split: str) -> int:
        return len(self.labels["test" if split == "ood" else split])

    def rows(self, split: str, index: int, batch_size: int) -> np.ndarray:
        """Row indices of batch ``index``: random (train) or a fixed contiguous window (evaluation splits)."""
        n = self.split_size(split)
        if split == "train":
            return self.rng(split, index).integers(0, n, size=batch_size)
        return np.arange(index * batch_size, (index + 1) * batch_size) % n

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` images in [0, 1] -> ``(B, N, patch*patch*C)`` tokens (row-major patches)."""
        if self.upsample > 1:
            x = x.repeat_interleave(self.upsample, dim=-2).repeat_interleave(self.upsample, dim=-1)
        return rearrange(x, "b c (h p1) (w p2) -> b (h w) (p1 p2 c)", p1=self.patch, p2=self.patch)

    def make_batch(self, split: str, index: int, batch_size: int) -> dict[str, torch.Tensor]:
        if split not in (*self.labels, "ood"):
            raise ValueError(f"unknown split {split!r}; expected one of {[*self.labels, 'ood']}")
        rows = self.rows(split, index, batch_size)
        labels = self.labels["test" if split == "ood" else split]
        return {"inputs": self.tokens(self.pixels(split, rows)),
                "targets": torch.from_numpy(labels[rows].astype(np.int64))}

    def metric_sums(self, prediction: torch.Tensor, batch: dict[str, torch.Tensor]) -> Sums:
        return classification_sums(prediction, batch["targets"])

    def _describe_tokens(self) -> str:
        ood = f"noise std {self.ood_noise}" if self.ood == "noise" else "1-pixel shift"
        return (f"{self.spatial_shape[0]}x{self.spatial_shape[1]} tokens of {self.input_dim} features "
                f"(upsample {self.upsample}, patch {self.patch}); ood = test with {ood}")


class Digits(ImageClassification):
    """scikit-learn's 8x8 handwritten digits (ships with scikit-learn; no download)."""

    SPLIT_SIZES = {"val": 270, "test": 270}  # train = the remaining 1257

    def __init__(self, *, upsample: int = 1, patch: int = 1, ood: str = "noise", ood_noise: float = 0.2,
                 split_seed: int = 0, seed: int = 0) -> None:
        from sklearn.datasets import load_digits

        data = load_digits()
        images = data.images.astype(np.float32)[:, None]  # (1797, 1, 8, 8), values 0..16
        labels = data.target.astype(np.int64)
        order = np.random.default_rng([split_seed, 1]).permutation(len(labels))
        n_val, n_test = self.SPLIT_SIZES["val"], self.SPLIT_SIZES["test"]
        parts = {"val": order[:n_val], "test": order[n_val:n_val + n_test], "train": order[n_val + n_test:]}
        super().__init__({k: images[v] for k, v in parts.items()}, {k: labels[v] for k, v in parts.items()},
                         num_classes=10, scale=16.0, upsample=upsample, patch=patch, ood=ood,
                         ood_noise=ood_noise, split_seed=split_seed, seed=seed)

    def describe(self) -> str:
        return f"sklearn digits 8x8, 10 classes: {self._describe_tokens()}"


MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte",
}
IDX_DTYPES = {0x08: np.uint8}


def read_idx(path: Path) -> np.ndarray:
    """An idx file (``magic = 0 0 dtype ndim``, big-endian int32 dims, then data), gzip-compressed or not."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES:
        raise DataError(f"{path} is not an unsigned-byte idx file (bad magic number); re-download it")
    ndim = raw[3]
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    data = np.frombuffer(raw, dtype=IDX_DTYPES[raw[2]], offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DataError(f"{path} holds {data.size} values but its header says {dims}; the file is truncated")
    return data.reshape(dims)


def _find_dir(root: Path, subfolders: tuple[str, ...], probe: str) -> Path | None:
    """``root`` or the first of its ``subfolders`` that contains ``probe`` (optionally ``.gz``)."""
    for folder in (root, *(root / s for s in subfolders)):
        if (folder / probe).is_file() or (folder / f"{probe}.gz").is_file():
            return folder
    return None


def _split_train_val(images: np.ndarray, labels: np.ndarray, val_size: int, what: str):
    if not 0 < val_size < len(labels):
        raise ConfigError(f"data.task.val_size={val_size} must be between 1 and {len(labels) - 1} ({what} "
                          f"has {len(labels)} training images)")
    cut = len(labels) - val_size
    return {"train": images[:cut], "val": images[cut:]}, {"train": labels[:cut], "val": labels[cut:]}


class MNIST(ImageClassification):
    """MNIST 28x28 grey digits read from the idx files under ``root``."""

    def __init__(self, *, root: str = "data/mnist", val_size: int = 5000, upsample: int = 1, patch: int = 1,
                 ood: str = "noise", ood_noise: float = 0.2, split_seed: int = 0, seed: int = 0) -> None:
        self.root = Path(root).expanduser()
        folder = _find_dir(self.root, ("MNIST/raw", "raw"), MNIST_FILES["train_images"])
        arrays = {}
        for key, name in MNIST_FILES.items():
            path = None if folder is None else next(
                (p for p in (folder / name, folder / f"{name}.gz") if p.is_file()), None)
            if path is None:
                raise DataError(f"data.task.root={self.root}: {name}[.gz] not found (looked in the folder and "
                                f"its MNIST/raw); expected files: {', '.join(MNIST_FILES.values())}")
            arrays[key] = read_idx(path)
        for split in ("train", "test"):
            imgs, labs = arrays[f"{split}_images"], arrays[f"{split}_labels"]
            if imgs.ndim != 3 or labs.ndim != 1 or len(imgs) != len(labs):
                raise DataError(f"MNIST {split} files under {folder}: images {imgs.shape} and labels "
                                f"{labs.shape} do not match (expected (n, H, W) and (n,))")
        images, labels = _split_train_val(arrays["train_images"][:, None], arrays["train_labels"], val_size, "MNIST")
        images["test"], labels["test"] = arrays["test_images"][:, None], arrays["test_labels"]
        super().__init__(images, labels, num_classes=10, scale=255.0, upsample=upsample, patch=patch, ood=ood,
                         ood_noise=ood_noise, split_seed=split_seed, seed=seed)

    def describe(self) -> str:
        return f"MNIST from {self.root}: {self._describe_tokens()}"


CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST = "test_batch"


def _latin1_bytes(text: str, encoding: str) -> bytes:
    """How Python 3 pickles ``bytes`` at protocol 2 (``_codecs.encode(text, "latin1")``), for that codec only."""
    if encoding != "latin1" or not isinstance(text, str):
        raise pickle.UnpicklingError(f"it encodes bytes with {encoding!r}, not latin1")
    return text.encode("latin1")


class DataUnpickler(pickle.Unpickler):
    """An unpickler that builds plain data only: numpy arrays (and their dtypes), lists, dicts, tuples, numbers, bytes
    and strings. Any other global a pickle names (a function to call, a class to build) is refused, so loading cannot
    run code."""

    ALLOWED = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype, ("_codecs", "encode"): _latin1_bytes,
               **{(f"numpy.{core}.{module}", f.__name__): f for core in ("_core", "core")
                  for module, f in (("multiarray", _reconstruct), ("numeric", _frombuffer))}}

    def find_class(self, module: str, name: str):
        found = self.ALLOWED.get((module, name))
        if found is None:
            raise pickle.UnpicklingError(f"it names {module}.{name}, which is not plain data (numpy arrays, lists, "
                                         "dicts, bytes, strings)")
        return found


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python pickle -> images (n, 3, 32, 32) uint8 and labels (n,), read by :class:`DataUnpickler`."""
    with open(path, "rb") as f:
        try:
            batch = DataUnpickler(f, encoding="bytes").load()
        except Exception as err:  # any unpickling failure (or a refused global) means a bad file
            raise DataError(f"{path} is not a CIFAR-10 python pickle ({err}); refused, nothing was run; re-download "
                            "it from the CIFAR-10 page") from err
    if not isinstance(batch, dict):
        raise DataError(f"{path} holds a {type(batch).__name__}, not a CIFAR-10 batch (a dict); re-download it")
    batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in batch or "labels" not in batch:
        raise DataError(f"{path} has no 'data'/'labels' entries; is it a CIFAR-10 (not CIFAR-100) batch?")
    data = np.asarray(batch["data"], dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{path}: data has shape {data.shape}, expected (n, 3072)")
    images = rearrange(data, "n (c h w) -> n c h w", c=3, h=32, w=32)
    return images, np.asarray(batch["labels"], dtype=np.int64)


class CIFAR10(ImageClassification):
    """CIFAR-10 32x32 colour images read from the python pickles under ``root``."""

    def __init__(self, *, root: str = "data/cifar10", val_size: int = 5000, upsample: int = 1, patch: int = 4,
                 ood: str = "noise", ood_noise: float = 0.2, split_seed: int = 0, seed: int = 0) -> None:
        self.root = Path(root).expanduser()
        folder = _find_dir(self.root, ("cifar-10-batches-py",), CIFAR_TRAIN[0]) or self.root
        missing = [n for n in (*CIFAR_TRAIN, CIFAR_TEST) if not (folder / n).is_file()]
        if missing:
            raise DataError(f"data.task.root={self.root}: {', '.join(missing)} not found (looked in the folder "
                            f"and its cifar-10-batches-py); expected files: "
                            f"{', '.join(CIFAR_TRAIN)}, {CIFAR_TEST}")
        train = [read_cifar_batch(folder / n) for n in CIFAR_TRAIN]
        train_images = np.concatenate([b[0] for b in train])
        train_labels = np.concatenate([b[1] for b in train])
        images, labels = _split_train_val(train_images, train_labels, val_size, "CIFAR-10")
        images["test"], labels["test"] = read_cifar_batch(folder / CIFAR_TEST)
        super().__init__(images, labels, num_classes=10, scale=255.0, upsample=upsample, patch=patch, ood=ood,
                         ood_noise=ood_noise, split_seed=split_seed, seed=seed)

    def describe(self) -> str:
        return f"CIFAR-10 from {self.root}: {self._describe_tokens()}"
