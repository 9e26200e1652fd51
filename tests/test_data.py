"""Tests for sims.datasets (no network; /usr/share/datasets only for one skippable test)."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

from weightmirror.sims.datasets import (
    IN_MEMORY_DATASETS as DATASET_NAMES,
    FASHION_MNIST_DEFAULT_DIR,
    DataError,
    Dataset,
    iterate_minibatches,
    load_cifar10,
    load_dataset,
    load_digits,
    load_mnist_dir,
    read_idx,
)

# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

_CODES = {
    np.dtype(np.uint8): 0x08,
    np.dtype(np.int8): 0x09,
    np.dtype(np.int16): 0x0B,
    np.dtype(np.int32): 0x0C,
    np.dtype(np.float32): 0x0D,
    np.dtype(np.float64): 0x0E,
}


def idx_bytes(arr: np.ndarray) -> bytes:
    arr = np.asarray(arr)
    header = bytes([0, 0, _CODES[arr.dtype], arr.ndim])
    header += b"".join(struct.pack(">I", d) for d in arr.shape)
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, arr: np.ndarray, gz: bool = False) -> Path:
    data = idx_bytes(arr)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def make_mnist_dir(
    d: Path, n_train: int = 12, n_test: int = 5, gz: bool = False, seed: int = 0
) -> dict:
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) % 10).astype(np.uint8),
    }
    d.mkdir(parents=True, exist_ok=True)
    for base, arr in arrays.items():
        write_idx(d / (base + (".gz" if gz else "")), arr, gz=gz)
    return arrays


CIFAR_PER_BATCH = 20


def cifar_batch(index: int, n: int = CIFAR_PER_BATCH) -> dict:
    """A batch whose pixel values are known: red = 10+b, green = 100+b, blue = 200+b,
    with a small per-image/per-pixel ramp so the channels have nonzero spread."""
    data = np.empty((n, 3072), dtype=np.uint8)
    ramp = (np.arange(1024) % 7).astype(np.uint8)
    for i in range(n):
        data[i, :1024] = 10 + index + ramp + i % 3
        data[i, 1024:2048] = 100 + index + ramp
        data[i, 2048:] = 200 + index + ramp + i % 5
    labels = [(i + index) % 10 for i in range(n)]
    return {b"batch_label": b"batch", b"labels": labels, b"data": data,
            b"filenames": [b"x.png"] * n}


def make_cifar_dir(d: Path) -> None:
    d.mkdir(parents=True, exist_ok=True)
    for i in range(1, 6):
        with open(d / f"data_batch_{i}", "wb") as f:
            pickle.dump(cifar_batch(i), f, protocol=2)
    with open(d / "test_batch", "wb") as f:
        pickle.dump(cifar_batch(0), f, protocol=2)


# --------------------------------------------------------------------------
# read_idx
# --------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize(
    "arr",
    [
        np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4),
        np.array([0, 9, 3, 7], dtype=np.uint8),
        np.array([[-128, 5], [127, -1]], dtype=np.int8),
        np.array([-30000, 0, 12345], dtype=np.int16),
        np.array([[-(2**31), 2**31 - 1, 7]], dtype=np.int32),
        np.array([1.5, -2.25, 3e10], dtype=np.float32),
        np.array([[np.pi, -1e-300]], dtype=np.float64),
    ],
    ids=["u8-3d", "u8-1d", "i8", "i16", "i32", "f32", "f64"],
)
def test_read_idx_round_trip(tmp_path, arr, gz):
    # Gzip detection is by magic bytes, so give no ".gz" extension.
    p = write_idx(tmp_path / "arr.idx", arr, gz=gz)
    out = read_idx(p)
    assert out.shape == arr.shape
    assert out.dtype == arr.dtype
    assert out.dtype.isnative
    np.testing.assert_array_equal(out, arr)
    out[...] = 0  # result is writable


def test_read_idx_gz_extension_but_raw_content(tmp_path):
    arr = np.arange(10, dtype=np.uint8)
    p = write_idx(tmp_path / "labels.gz", arr, gz=False)
    np.testing.assert_array_equal(read_idx(p), arr)


def test_read_idx_accepts_str_path(tmp_path):
    arr = np.arange(6, dtype=np.uint8).reshape(2, 3)
    p = write_idx(tmp_path / "a.idx", arr)
    np.testing.assert_array_equal(read_idx(str(p)), arr)


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_truncated(tmp_path, gz):
    arr = np.zeros((5, 28, 28), dtype=np.uint8)
    data = idx_bytes(arr)[:-100]
    p = tmp_path / ("train-images-idx3-ubyte" + (".gz" if gz else ""))
    p.write_bytes(gzip.compress(data) if gz else data)
    with pytest.raises(DataError) as ei:
        read_idx(p)
    msg = str(ei.value)
    assert p.name in msg
    assert "truncated" in msg
    assert "5x28x28 = 3920" in msg and "3820" in msg
    assert "\n" not in msg


def test_read_idx_truncated_header(tmp_path):
    p = tmp_path / "short.idx"
    p.write_bytes(bytes([0, 0, 8, 3, 0, 0]))
    with pytest.raises(DataError, match="short.idx.*truncated header"):
        read_idx(p)


def test_read_idx_empty(tmp_path):
    p = tmp_path / "empty.idx"
    p.write_bytes(b"")
    with pytest.raises(DataError, match="empty.idx"):
        read_idx(p)


def test_read_idx_trailing_bytes(tmp_path):
    p = tmp_path / "labels.idx"
    p.write_bytes(idx_bytes(np.arange(10, dtype=np.uint8)) + b"\x00\x01\x02")
    with pytest.raises(DataError) as ei:
        read_idx(p)
    msg = str(ei.value)
    assert "labels.idx" in msg and "trailing" in msg and "3 extra" in msg


@pytest.mark.parametrize(
    "header",
    [b"\x01\x00\x08\x01", b"\x00\x07\x08\x01", b"PK\x03\x04"],
    ids=["byte0", "byte1", "zip"],
)
def test_read_idx_wrong_magic(tmp_path, header):
    p = tmp_path / "bad-magic.idx"
    p.write_bytes(header + struct.pack(">I", 3) + b"abc")
    with pytest.raises(DataError, match="bad-magic.idx.*not an IDX file"):
        read_idx(p)


def test_read_idx_unsupported_type_code(tmp_path):
    p = tmp_path / "badtype.idx"
    p.write_bytes(b"\x00\x00\x07\x01" + struct.pack(">I", 3) + b"abc")
    with pytest.raises(DataError, match=r"badtype.idx.*0x07"):
        read_idx(p)


def test_read_idx_zero_dims(tmp_path):
    p = tmp_path / "zerodim.idx"
    p.write_bytes(b"\x00\x00\x08\x00")
    with pytest.raises(DataError, match="zerodim.idx"):
        read_idx(p)


@pytest.mark.parametrize("how", ["cut", "flip", "garbage-after"])
def test_read_idx_corrupt_gzip(tmp_path, how):
    comp = bytearray(gzip.compress(idx_bytes(np.arange(2000, dtype=np.int32))))
    if how == "cut":
        comp = comp[: len(comp) // 2]
    elif how == "flip":
        for i in range(20, 40):
            comp[i] ^= 0xFF
    else:
        comp += b"garbage!"
    p = tmp_path / "data.idx.gz"
    p.write_bytes(bytes(comp))
    with pytest.raises(DataError) as ei:
        read_idx(p)
    assert "data.idx.gz" in str(ei.value)
    assert "\n" not in str(ei.value)


def test_read_idx_missing_file(tmp_path):
    p = tmp_path / "nope-idx1-ubyte"
    with pytest.raises(DataError, match="nope-idx1-ubyte.*not found"):
        read_idx(p)


def test_read_idx_directory(tmp_path):
    with pytest.raises(DataError, match=str(tmp_path.name)):
        read_idx(tmp_path)


def test_data_error_is_value_error():
    assert issubclass(DataError, ValueError)


# --------------------------------------------------------------------------
# load_mnist_dir
# --------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
def test_load_mnist_dir_round_trip(tmp_path, gz):
    arrays = make_mnist_dir(tmp_path / "m", gz=gz)
    ds = load_mnist_dir(tmp_path / "m", name="fashion-mnist")
    assert isinstance(ds, Dataset)
    assert ds.name == "fashion-mnist"
    assert ds.x_train.shape == (12, 1, 28, 28) and ds.x_test.shape == (5, 1, 28, 28)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    assert ds.num_classes == 10 and ds.image_shape == (1, 28, 28) and ds.input_size == 784
    np.testing.assert_allclose(
        ds.x_train[:, 0], arrays["train-images-idx3-ubyte"] / 255.0, rtol=1e-6
    )
    np.testing.assert_array_equal(ds.y_test, arrays["t10k-labels-idx1-ubyte"])


def test_load_mnist_dir_mixed_compression(tmp_path):
    d = tmp_path / "m"
    make_mnist_dir(d, gz=True)
    # replace one file with its raw version
    raw = gzip.decompress((d / "t10k-labels-idx1-ubyte.gz").read_bytes())
    (d / "t10k-labels-idx1-ubyte.gz").unlink()
    (d / "t10k-labels-idx1-ubyte").write_bytes(raw)
    ds = load_mnist_dir(d)
    assert ds.y_test.shape == (5,)


def test_load_mnist_dir_missing_directory(tmp_path):
    with pytest.raises(DataError, match="does-not-exist.*directory not found"):
        load_mnist_dir(tmp_path / "does-not-exist")


def test_load_mnist_dir_missing_file(tmp_path):
    d = tmp_path / "m"
    make_mnist_dir(d)
    (d / "t10k-images-idx3-ubyte").unlink()
    with pytest.raises(DataError) as ei:
        load_mnist_dir(d)
    msg = str(ei.value)
    assert "t10k-images-idx3-ubyte" in msg and "missing" in msg


def test_load_mnist_dir_count_mismatch(tmp_path):
    d = tmp_path / "m"
    make_mnist_dir(d)
    write_idx(d / "train-labels-idx1-ubyte", np.zeros(11, dtype=np.uint8))
    with pytest.raises(DataError) as ei:
        load_mnist_dir(d)
    msg = str(ei.value)
    assert "train-labels-idx1-ubyte" in msg and "11 labels" in msg and "12 images" in msg


def test_load_mnist_dir_bad_label_values(tmp_path):
    d = tmp_path / "m"
    make_mnist_dir(d)
    write_idx(d / "t10k-labels-idx1-ubyte", np.array([0, 1, 2, 10, 3], dtype=np.uint8))
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.*0..9"):
        load_mnist_dir(d)


def test_load_mnist_dir_images_not_3d(tmp_path):
    d = tmp_path / "m"
    make_mnist_dir(d)
    write_idx(d / "train-images-idx3-ubyte", np.zeros((12, 784), dtype=np.uint8))
    with pytest.raises(DataError, match="train-images-idx3-ubyte.*3-D"):
        load_mnist_dir(d)


def test_load_mnist_dir_truncated_file_named(tmp_path):
    d = tmp_path / "m"
    make_mnist_dir(d, gz=True)
    raw = gzip.decompress((d / "train-images-idx3-ubyte.gz").read_bytes())
    (d / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(raw[:1016]))
    with pytest.raises(DataError) as ei:
        load_mnist_dir(d)
    assert "train-images-idx3-ubyte.gz" in str(ei.value)
    assert "12x28x28 = 9408 bytes of pixels, file has 1000" in str(ei.value)


# --------------------------------------------------------------------------
# CIFAR-10
# --------------------------------------------------------------------------


@pytest.mark.parametrize("nested", [False, True])
def test_load_cifar10_layout(tmp_path, nested):
    target = tmp_path / "cifar-10-batches-py" if nested else tmp_path / "flat"
    make_cifar_dir(target)
    ds = load_cifar10(tmp_path if nested else target)
    assert ds.x_train.shape == (5 * CIFAR_PER_BATCH, 3, 32, 32)
    assert ds.x_test.shape == (CIFAR_PER_BATCH, 3, 32, 32)
    assert ds.y_train.dtype == np.int64 and ds.x_train.dtype == np.float32
    assert ds.image_shape == (3, 32, 32) and ds.input_size == 3072
    # first 1024 values are red, row-major 32x32
    ramp = (np.arange(1024) % 7).reshape(32, 32)
    b1 = cifar_batch(1)
    np.testing.assert_allclose(ds.x_train[0, 0] * 255, 10 + 1 + ramp, atol=1e-4)
    np.testing.assert_allclose(ds.x_train[0, 1] * 255, 100 + 1 + ramp, atol=1e-4)
    np.testing.assert_allclose(ds.x_train[0, 2] * 255, 200 + 1 + ramp, atol=1e-4)
    np.testing.assert_allclose(
        ds.x_train[:CIFAR_PER_BATCH].reshape(CIFAR_PER_BATCH, -1) * 255,
        b1[b"data"], atol=1e-4,
    )
    # batches concatenated in order 1..5
    np.testing.assert_array_equal(ds.y_train[:CIFAR_PER_BATCH], b1[b"labels"])
    np.testing.assert_array_equal(
        ds.y_train[4 * CIFAR_PER_BATCH:], cifar_batch(5)[b"labels"]
    )
    np.testing.assert_array_equal(ds.y_test, cifar_batch(0)[b"labels"])


def test_load_dataset_cifar10_standardised(tmp_path):
    make_cifar_dir(tmp_path)
    ds = load_dataset("cifar10", data_dir=tmp_path, flatten=False)
    assert ds.x_train.dtype == np.float32 and ds.x_test.dtype == np.float32
    mean = ds.x_train.mean(axis=(0, 2, 3), dtype=np.float64)
    std = ds.x_train.std(axis=(0, 2, 3), dtype=np.float64)
    np.testing.assert_allclose(mean, 0.0, atol=1e-5)
    np.testing.assert_allclose(std, 1.0, atol=1e-4)
    # test set uses training statistics: red channel of test batch is darker
    assert ds.x_test[:, 0].mean() < 0
    flat = load_dataset("cifar10", data_dir=tmp_path)
    assert flat.x_train.shape == (5 * CIFAR_PER_BATCH, 3072)
    # flattening is C-major: first 1024 features are the red channel
    np.testing.assert_allclose(flat.x_train[:, :1024], ds.x_train[:, 0].reshape(-1, 1024))


@pytest.mark.parametrize(
    "content",
    [b"this is not a pickle at all", b"", pickle.dumps([1, 2, 3]),
     pickle.dumps({b"data": np.zeros((20, 3071), np.uint8), b"labels": [0] * 20}),
     pickle.dumps({b"labels": [0] * 20}),
     pickle.dumps({b"data": np.zeros((20, 3072), np.uint8), b"labels": [0] * 19}),
     pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]})],
    ids=["garbage", "empty", "list", "shape", "nodata", "count", "labelrange"],
)
def test_load_cifar10_broken_batch(tmp_path, content):
    make_cifar_dir(tmp_path)
    (tmp_path / "data_batch_3").write_bytes(content)
    with pytest.raises(DataError) as ei:
        load_cifar10(tmp_path)
    assert "data_batch_3" in str(ei.value)
    assert "\n" not in str(ei.value)


class _Payload:
    """Unpickling this calls ``pathlib.Path.touch`` on a marker file (stands for any code)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


@pytest.mark.parametrize("protocol", [2, 4])
def test_a_cifar_batch_that_runs_code_is_refused(tmp_path, protocol):
    """A crafted batch whose pickle also calls a function: refused before the call, one line naming the file."""
    make_cifar_dir(tmp_path)
    marker = tmp_path / "payload-ran"
    batch = cifar_batch(1)
    batch[b"batch_label"] = _Payload(marker)  # a valid batch that also runs code
    with open(tmp_path / "data_batch_1", "wb") as f:
        pickle.dump(batch, f, protocol=protocol)
    with pytest.raises(DataError, match=r"data_batch_1: refused: the pickle calls \S+, which a CIFAR-10 batch never does") as info:
        load_cifar10(tmp_path)
    assert "\n" not in str(info.value)
    assert not marker.exists()  # the payload never ran


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_cifar_batches_of_every_pickle_protocol_are_read(tmp_path, protocol):
    make_cifar_dir(tmp_path)
    with open(tmp_path / "data_batch_2", "wb") as f:
        pickle.dump(cifar_batch(2), f, protocol=protocol)
    ds = load_cifar10(tmp_path)
    np.testing.assert_array_equal(ds.y_train[CIFAR_PER_BATCH:2 * CIFAR_PER_BATCH], cifar_batch(2)[b"labels"])


def test_load_cifar10_missing_batch(tmp_path):
    make_cifar_dir(tmp_path)
    (tmp_path / "test_batch").unlink()
    with pytest.raises(DataError, match="test_batch"):
        load_cifar10(tmp_path)


def test_load_cifar10_empty_dir(tmp_path):
    with pytest.raises(DataError, match="no CIFAR-10 batches"):
        load_cifar10(tmp_path)


def test_load_cifar10_missing_dir(tmp_path):
    with pytest.raises(DataError, match="nowhere"):
        load_cifar10(tmp_path / "nowhere")


# --------------------------------------------------------------------------
# digits
# --------------------------------------------------------------------------


def test_load_digits_split():
    a = load_digits()
    b = load_digits()
    assert a.x_train.shape == (1437, 1, 8, 8) and a.x_test.shape == (360, 1, 8, 8)
    assert a.image_shape == (1, 8, 8) and a.input_size == 64 and a.num_classes == 10
    assert a.x_train.dtype == np.float32 and a.y_train.dtype == np.int64
    assert 0.0 <= a.x_train.min() and a.x_train.max() <= 1.0
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    # the two parts are disjoint and together the full data set (all 10 classes)
    assert set(np.unique(a.y_train)) == set(range(10))
    from sklearn.datasets import load_digits as sk

    full = sk().images.reshape(-1, 64)
    both = np.concatenate([a.x_train, a.x_test]).reshape(-1, 64) * 16
    assert sorted(map(tuple, np.rint(both).astype(int))) == sorted(
        map(tuple, full.astype(int))
    )


def test_load_dataset_digits():
    ds = load_dataset("digits")
    assert ds.x_train.shape == (1437, 64) and ds.x_test.shape == (360, 64)
    assert abs(float(ds.x_train.mean())) < 1e-5
    assert abs(float(ds.x_train.std()) - 1.0) < 1e-4
    again = load_dataset("Digits")
    np.testing.assert_array_equal(ds.x_test, again.x_test)
    other = load_dataset("digits", seed=1)  # a run's seed never changes the test set
    np.testing.assert_array_equal(ds.y_test, other.y_test)
    np.testing.assert_array_equal(ds.x_train, other.x_train)
    unflat = load_dataset("digits", flatten=False)
    assert unflat.x_train.shape == (1437, 1, 8, 8)


# --------------------------------------------------------------------------
# load_dataset front end
# --------------------------------------------------------------------------


def test_load_dataset_unknown_name():
    with pytest.raises(DataError) as ei:
        load_dataset("imagenet")
    msg = str(ei.value)
    assert "imagenet" in msg
    for n in DATASET_NAMES:
        assert n in msg


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_load_dataset_requires_data_dir(name):
    with pytest.raises(DataError, match="data_dir is required"):
        load_dataset(name)


def test_load_dataset_mnist_from_dir(tmp_path):
    make_mnist_dir(tmp_path, n_train=30, n_test=7, gz=True)
    ds = load_dataset("mnist", data_dir=tmp_path)
    assert ds.name == "mnist"
    assert ds.x_train.shape == (30, 784) and ds.x_test.shape == (7, 784)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    assert abs(float(ds.x_train.mean())) < 1e-5
    assert abs(float(ds.x_train.std()) - 1.0) < 1e-4


@pytest.mark.skipif(
    not FASHION_MNIST_DEFAULT_DIR.is_dir(),
    reason=f"{FASHION_MNIST_DEFAULT_DIR} absent (Debian package dataset-fashion-mnist)",
)
def test_load_dataset_fashion_mnist_system_copy():
    ds = load_dataset("fashion-mnist")
    assert ds.x_train.shape == (60000, 784)
    assert ds.x_test.shape == (10000, 784)
    assert ds.y_train.shape == (60000,) and ds.y_test.shape == (10000,)
    assert ds.num_classes == 10
    assert set(np.unique(ds.y_train)) == set(range(10))
    assert ds.x_train.dtype == np.float32


# --------------------------------------------------------------------------
# iterate_minibatches
# --------------------------------------------------------------------------


@pytest.mark.parametrize("n,bs", [(10, 3), (12, 4), (5, 8), (1, 1)])
@pytest.mark.parametrize("shuffle", [False, True])
def test_iterate_minibatches_covers_each_sample_once(n, bs, shuffle):
    x = np.arange(n * 2, dtype=np.float32).reshape(n, 2)
    y = np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(3) if shuffle else None
    batches = list(iterate_minibatches(x, y, bs, rng=rng))
    assert [len(b[1]) for b in batches[:-1]] == [bs] * (len(batches) - 1)
    seen = np.concatenate([yb for _, yb in batches])
    assert sorted(seen.tolist()) == list(range(n))
    for xb, yb in batches:
        np.testing.assert_array_equal(xb[:, 0], 2 * yb)  # x and y stay paired
    if not shuffle:
        np.testing.assert_array_equal(seen, y)


def test_iterate_minibatches_shuffles_reproducibly():
    x = np.arange(100)
    y = np.arange(100)
    a = np.concatenate([yb for _, yb in iterate_minibatches(x, y, 7, np.random.default_rng(1))])
    b = np.concatenate([yb for _, yb in iterate_minibatches(x, y, 7, np.random.default_rng(1))])
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, y)


def test_iterate_minibatches_drop_last():
    x = np.arange(10)
    batches = list(iterate_minibatches(x, x, 3, drop_last=True))
    assert [len(b[0]) for b in batches] == [3, 3, 3]
    assert list(iterate_minibatches(x[:2], x[:2], 3, drop_last=True)) == []


def test_iterate_minibatches_bad_args():
    x = np.arange(10)
    with pytest.raises(ValueError):
        iterate_minibatches(x, x[:9], 2)
    with pytest.raises(ValueError):
        iterate_minibatches(x, x, 0)
    with pytest.raises(TypeError):
        iterate_minibatches(x, x, 2, rng=42)
