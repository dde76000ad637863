"""Data: the IDX reader, Fashion-MNIST preprocessing, ImageFolder trees, clear errors."""

import numpy as np
import pytest
import torch
from fake_idx import fake_images, write_fake_fashion_mnist, write_idx

from chanprune import InputError
from chanprune.evaluation.data import FASHION_MNIST_DIR, FashionMNIST, load_dataset, read_idx


@pytest.mark.parametrize("compress", [True, False])
def test_idx_round_trip(tmp_path, compress):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    assert np.array_equal(read_idx(write_idx(tmp_path / "a", a, compress)), a)
    b = np.array([5, -7, 1 << 20], dtype=">i4")
    assert read_idx(write_idx(tmp_path / "b", b, compress)).tolist() == [5, -7, 1 << 20]


def test_idx_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x01\x02\x03\x04rest")
    with pytest.raises(InputError, match=r"bad.*not an IDX file"):
        read_idx(bad)
    short = tmp_path / "short"
    short.write_bytes(bytes([0, 0, 8, 1]) + (10).to_bytes(4, "big") + b"abc")
    with pytest.raises(InputError, match=r"shape \(10,\).*3 bytes"):
        read_idx(short)


def test_fashion_mnist_items_are_padded_normalised_rgb(tmp_path):
    root = write_fake_fashion_mnist(tmp_path)
    ds = FashionMNIST(root, "test", size=32)
    images, labels = fake_images(41, 1)
    assert len(ds) == 41 and ds.targets.tolist() == labels.tolist()
    x, y = ds[3]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and int(y) == labels[3]
    assert torch.equal(x[0], x[1]) and torch.equal(x[0], x[2])  # grey repeated
    background = (0 - 0.2860) / 0.3530
    assert torch.allclose(x[:, :2, :], torch.tensor(background))  # 2 px of padding each side
    assert torch.allclose(x[:, :, -2:], torch.tensor(background))
    expected = (torch.from_numpy(images[3]).float() / 255 - 0.2860) / 0.3530
    assert torch.allclose(x[0, 2:30, 2:30], expected)
    assert len(FashionMNIST(root, "train")) == 96


def test_missing_data_says_how_to_get_it(tmp_path):
    with pytest.raises(InputError, match="dataset-fashion-mnist") as e:
        FashionMNIST(tmp_path / "nowhere", "test")
    assert "t10k-images-idx3-ubyte" in str(e.value) and "--data" in str(e.value)
    with pytest.raises(InputError, match="unknown split"):
        FashionMNIST(tmp_path, "val")
    with pytest.raises(InputError, match="unknown dataset 'mnist'"):
        load_dataset("mnist")
    with pytest.raises(InputError, match="--data is required"):
        load_dataset("imagefolder")


@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="dataset-fashion-mnist not installed")
def test_installed_fashion_mnist():
    test = FashionMNIST(split="test")
    assert len(test) == 10000 and torch.bincount(test.targets).tolist() == [1000] * 10
    assert test[0][0].shape == (3, 32, 32)


def test_image_folder_tree(tmp_path):
    pytest.importorskip("torchvision")
    from PIL import Image

    for split in ("train", "val"):
        for k, cls in enumerate(("cat", "dog")):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(2 + k):
                Image.new("RGB", (40, 30), (80 * k, 10 * i, 0)).save(
                    tmp_path / split / cls / f"{i}.png"
                )
    ds = load_dataset("imagefolder", "test", tmp_path, size=24)  # picks val/
    assert ds.classes == ["cat", "dog"] and len(ds) == 5
    x, y = ds[4]
    assert x.shape == (3, 24, 24) and y == 1
    with pytest.raises(InputError, match="does not exist"):
        load_dataset("imagefolder", "test", tmp_path / "nope")
