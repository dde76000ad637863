"""Image classification data for accuracy runs: Fashion-MNIST (IDX files) and ImageFolder trees.

Fashion-MNIST comes from the Debian package ``dataset-fashion-mnist`` (IDX files, gzipped or
not, under /usr/share/datasets/fashion-mnist) or any folder holding the same four files. Images
are 28x28 grey; the zoo models expect RGB at a size divisible by 32, so :func:`fashion_mnist`
pads them with the background value to ``size`` and repeats the grey channel three times: the
models stay unmodified torchvision models, as a user's ImageNet run would use them.
An ImageFolder tree (one sub-folder per class, ImageNet's layout) is read with torchvision.
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import InputError

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# Statistics of the 60k training images (pixel values / 255).
_MEAN, _STD = 0.2860, 0.3530
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """An IDX file (LeCun's MNIST format, optionally gzipped) as a numpy array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise InputError(f"{path} is not an IDX file (bad magic number {data[:4].hex()})")
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    count = int(np.prod(shape)) if shape else 1
    body = data[4 + 4 * ndim :]
    if len(body) != count * dtype.itemsize:
        raise InputError(f"{path}: header says shape {shape}, but the file holds {len(body)} bytes")
    return np.frombuffer(body, dtype=dtype).reshape(shape)


def _find(root: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (root / name).is_file():
            return root / name
    raise InputError(
        f"Fashion-MNIST file {stem}(.gz) not found in {root}. Install the Debian package "
        "dataset-fashion-mnist (apt-get install dataset-fashion-mnist, files land in "
        f"{FASHION_MNIST_DIR}) or pass --data with a folder holding the four IDX files."
    )


class FashionMNIST(Dataset):
    """Fashion-MNIST as normalised (3, size, size) float images and int64 labels.

    Pixels stay uint8 in memory (60k images: 47 MB); each item is converted when read.
    """

    classes = FASHION_MNIST_CLASSES

    def __init__(self, root: str | os.PathLike | None = None, split: str = "test", size: int = 32):
        if split not in _FILES:
            raise InputError(f"unknown split {split!r}; choose 'train' or 'test'")
        if size < 28:
            raise InputError(
                f"size must be at least 28 (Fashion-MNIST images are 28x28), got {size}"
            )
        root = Path(root) if root is not None else FASHION_MNIST_DIR
        images = read_idx(_find(root, _FILES[split][0]))
        labels = read_idx(_find(root, _FILES[split][1]))
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise InputError(
                f"{root}: expected N x 28 x 28 images and N labels, got {images.shape} "
                f"and {labels.shape}"
            )
        self.images = torch.from_numpy(images.copy())
        self.targets = torch.from_numpy(labels.astype(np.int64))
        self.size = size

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(self.images[i]), self.targets[i]

    def transform(self, img: torch.Tensor) -> torch.Tensor:
        """uint8 (..., 28, 28) -> normalised float (..., 3, size, size), padded with background."""
        x = (img.float() / 255 - _MEAN) / _STD
        h, w = x.shape[-2:]
        top, left = (self.size - h) // 2, (self.size - w) // 2
        pad = (left, self.size - w - left, top, self.size - h - top)
        x = torch.nn.functional.pad(x, pad, value=-_MEAN / _STD)
        return x.unsqueeze(-3).expand(*x.shape[:-2], 3, self.size, self.size).contiguous()


def image_folder(root: str | os.PathLike, size: int = 224, train: bool = False) -> Dataset:
    """An ImageFolder tree (``root/<class>/<image>``) with ImageNet's preprocessing at ``size``."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"image folder {root} does not exist")
    try:
        from torchvision import datasets, transforms
    except ImportError as e:
        raise InputError(
            "ImageFolder data needs torchvision (pip install 'chanprune[models]')"
        ) from e
    norm = transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    if train:
        tf = [transforms.RandomResizedCrop(size), transforms.RandomHorizontalFlip()]
    else:
        tf = [transforms.Resize(int(size * 256 / 224)), transforms.CenterCrop(size)]
    try:
        return datasets.ImageFolder(
            str(root), transforms.Compose([*tf, transforms.ToTensor(), norm])
        )
    except (FileNotFoundError, RuntimeError) as e:
        raise InputError(f"image folder {root}: {e}") from e


def load_dataset(
    name: str, split: str = "test", data: str | os.PathLike | None = None, size: int = 32
) -> Dataset:
    """``name`` is ``fashion-mnist`` (``data``: its folder, default the Debian package's) or
    ``imagefolder`` (``data``: the tree's root; ``split`` picks ``data/<split>`` if it exists,
    e.g. ImageNet's train/ and val/)."""
    if name == "fashion-mnist":
        return FashionMNIST(data, split, size)
    if name == "imagefolder":
        if data is None:
            raise InputError("--data is required for an ImageFolder dataset (the tree's root)")
        root = Path(data)
        sub = root / ("val" if split == "test" and (root / "val").is_dir() else split)
        return image_folder(sub if sub.is_dir() else root, size, train=split == "train")
    raise InputError(f"unknown dataset {name!r}; choose 'fashion-mnist' or 'imagefolder'")


def num_classes(ds: Dataset) -> int:
    return len(ds.classes)
