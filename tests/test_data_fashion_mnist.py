"""Fashion-MNIST reader on the real idx files, plus its error messages on missing/corrupt data."""

import gzip
import os

import numpy as np
import pytest

from visiondata import fashion_mnist
from visiondata.errors import DataError, MissingDataError


def _write_idx(path, array: np.ndarray, gz=True):
    array = np.ascontiguousarray(array, np.uint8)
    head = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    data = head + array.tobytes()
    with (gzip.open if gz else open)(path, "wb") as f:
        f.write(data)


@pytest.fixture
def fake_root(tmp_path):
    rng = np.random.default_rng(0)
    for split, (img, lbl) in fashion_mnist._FILES.items():
        n = 7 if split == "train" else 3
        _write_idx(tmp_path / f"{img}.gz", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(tmp_path / f"{lbl}.gz", rng.integers(0, 10, (n,)))
    return tmp_path


@pytest.mark.fashion_mnist
def test_real_data_shapes_and_class_balance():
    x, y = fashion_mnist.load("train")
    assert x.shape == (60000, 28, 28) and x.dtype == np.uint8
    assert y.shape == (60000,) and y.dtype == np.int64
    # Published facts about Fashion-MNIST: 6,000 train and 1,000 test images per class.
    np.testing.assert_array_equal(np.bincount(y, minlength=10), [6000] * 10)
    xt, yt = fashion_mnist.load("test")
    assert xt.shape == (10000, 28, 28)
    np.testing.assert_array_equal(np.bincount(yt, minlength=10), [1000] * 10)
    assert len(fashion_mnist.CLASS_NAMES) == 10 and fashion_mnist.CLASS_NAMES[9] == "ankle boot"
    # Real photos: background is black, objects bright; not constant images.
    assert x[:, 0, 0].mean() < 5 and x.mean() > 50
    # Returned arrays are the caller's own.
    x[0] = 0
    assert fashion_mnist.load("train")[0][0].any()


@pytest.mark.fashion_mnist
def test_to_rgb():
    x, _ = fashion_mnist.load("test")
    rgb = fashion_mnist.to_rgb(x[:4])
    assert rgb.shape == (4, 28, 28, 3) and np.all(rgb[..., 0] == x[:4]) and np.all(rgb[..., 2] == x[:4])
    assert fashion_mnist.to_rgb(x[:4], size=32).shape == (4, 32, 32, 3)


def test_root_argument_and_environment_variable(fake_root, monkeypatch):
    x, y = fashion_mnist.load("train", root=fake_root)
    assert x.shape == (7, 28, 28) and y.shape == (7,)
    monkeypatch.setenv(fashion_mnist.ENV_VAR, str(fake_root))
    assert fashion_mnist.load("test")[0].shape == (3, 28, 28)


def test_uncompressed_files_are_read(fake_root, tmp_path_factory):
    plain = tmp_path_factory.mktemp("plain")
    for f in os.listdir(fake_root):
        with gzip.open(fake_root / f) as src, open(plain / f[:-3], "wb") as dst:
            dst.write(src.read())
    a, b = fashion_mnist.load("train", root=fake_root), fashion_mnist.load("train", root=plain)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_missing_directory_says_how_to_get_it(tmp_path):
    with pytest.raises(MissingDataError, match="apt-get install dataset-fashion-mnist") as e:
        fashion_mnist.load("train", root=tmp_path / "nowhere")
    assert isinstance(e.value, FileNotFoundError) and "FASHION_MNIST_DIR" in str(e.value)


def test_missing_file(fake_root):
    os.remove(fake_root / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(MissingDataError, match="t10k-labels-idx1-ubyte"):
        fashion_mnist.load("test", root=fake_root)


def test_truncated_and_corrupt_files(fake_root):
    path = fake_root / "train-images-idx3-ubyte.gz"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # truncated gzip stream
    with pytest.raises(DataError, match="train-images"):
        fashion_mnist.load("train", root=fake_root)
    path.write_bytes(gzip.compress(b"\x00\x00\x08\x03" + (5).to_bytes(4, "big") * 3 + b"\x01" * 10))
    with pytest.raises(DataError, match="truncated or corrupt"):
        fashion_mnist.load("train", root=fake_root)
    path.write_bytes(gzip.compress(b"PK\x03\x04 not an idx file"))
    with pytest.raises(DataError, match="bad magic"):
        fashion_mnist.load("train", root=fake_root)


def test_mismatched_labels(fake_root):
    _write_idx(fake_root / "train-labels-idx1-ubyte.gz", np.zeros(6))
    with pytest.raises(DataError, match="7 images but labels"):
        fashion_mnist.load("train", root=fake_root)


def test_bad_split():
    with pytest.raises(ValueError, match="'train' or 'test'"):
        fashion_mnist.load("val")
