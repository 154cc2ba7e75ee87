import gzip
import io
import shutil
import struct
import zipfile

import numpy as np
import pytest
import torch

from metacompress.data import (
    CLASSIFICATION_DATASETS,
    ClassificationData,
    load_classification,
    train_val_split,
)
from metacompress.errors import DataError, UserError

CIFAR_NPZ = "cifar10/cifar10_genuine_subset.npz"


# ---------------------------------------------------------------- helpers for synthetic roots

def idx_bytes(arr: np.ndarray) -> bytes:
    arr = np.asarray(arr, dtype=np.uint8)
    return struct.pack(f">I{arr.ndim}I", 0x800 | arr.ndim, *arr.shape) + arr.tobytes()


def write_gz(path, payload: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(payload, mtime=0))


def fake_mnist(root, n=5, size=28, folder="mnist", prefix="t10k"):
    rng = np.random.default_rng(0)
    write_gz(root / folder / f"{prefix}-images-idx3-ubyte.gz",
             idx_bytes(rng.integers(0, 256, (n, size, size))))
    write_gz(root / folder / f"{prefix}-labels-idx1-ubyte.gz", idx_bytes(np.arange(n) % 10))
    return root / folder


# ---------------------------------------------------------------- real data

@pytest.fixture(scope="module")
def mnist_test(data_file):
    data_file("mnist/t10k-images-idx3-ubyte.gz")
    return load_classification("mnist", "test", data_file("mnist").parent)


def test_mnist_real(data_file, mnist_test):
    train = load_classification("mnist", "train", data_file("mnist").parent)
    assert len(train) == 60_000 and len(mnist_test) == 10_000
    for d in (train, mnist_test):
        assert d.images.shape[1:] == (1, 28, 28)
        assert d.images.dtype == torch.uint8 and d.labels.dtype == torch.int64
        assert int(d.images.max()) == 255 and int(d.images.min()) == 0
        assert d.classes == tuple("0123456789")
        assert d.mean == (0.1307,) and d.std == (0.3081,)
    assert int((mnist_test.labels == 0).sum()) == 980
    assert torch.bincount(mnist_test.labels).tolist() == [
        980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    # the stated mean is the real mean of the training pixels
    assert abs(train.images.float().mean().item() / 255 - 0.1307) < 1e-3
    assert (mnist_test.name, mnist_test.split) == ("mnist", "test")


def test_mnist_from_env(data_root, monkeypatch, mnist_test):
    monkeypatch.setenv("METACOMPRESS_DATA", str(data_root))
    again = load_classification("mnist", "test")
    assert torch.equal(again.labels, mnist_test.labels)


def test_fashion_mnist_real(data_file):
    root = data_file("fashion-mnist").parent
    train = load_classification("fashion-mnist", "train", root)
    test = load_classification("fashion-mnist", "test", root)
    assert train.images.shape == (60_000, 1, 28, 28)
    assert test.images.shape == (10_000, 1, 28, 28)
    assert torch.bincount(train.labels).tolist() == [6000] * 10
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    assert train.classes[0] == "T-shirt/top" and train.classes[9] == "Ankle boot"
    assert abs(train.images.float().mean().item() / 255 - train.mean[0]) < 1e-3


def test_cifar_genuine_subset(data_file):
    path = data_file(CIFAR_NPZ)
    root = path.parent.parent
    with np.load(path, allow_pickle=False) as z:
        train_labels = z["train_y_all"][z["train_idx"]]
        test_labels = z["test_y_all"][z["test_idx"]]
        train_x0 = z["train_x"][0]
    train = load_classification("cifar10", "train", root)
    test = load_classification("cifar10", "test", root)
    assert train.images.shape == (7_728, 3, 32, 32) and train.images.dtype == torch.uint8
    assert test.images.shape == (1_000, 3, 32, 32)
    assert np.array_equal(train.labels.numpy(), train_labels)
    assert np.array_equal(test.labels.numpy(), test_labels)
    assert np.array_equal(train.images[0].permute(1, 2, 0).numpy(), train_x0)  # HWC -> CHW
    # the genuine test subset is the first 1,000 test images: not class-balanced
    assert torch.bincount(test.labels).tolist() == [103, 89, 100, 103, 90, 86, 112, 102, 106, 109]
    assert train.classes[1] == "automobile" and len(train.classes) == 10
    assert train.mean == (0.4914, 0.4822, 0.4465)


def test_cifar_jpeg_test_set(data_file):
    tar = data_file("cifar10/cifar10_test_jpeg_q75_YoongiKim.tar")
    root = tar.parent.parent
    d = load_classification("cifar10", "test-jpeg", root)
    assert d.images.shape == (10_000, 3, 32, 32) and d.images.dtype == torch.uint8
    assert torch.bincount(d.labels).tolist() == [1000] * 10
    # ordered like the original test batch: aligned with the genuine first 1,000 test images
    genuine = load_classification("cifar10", "test", root)
    assert torch.equal(d.labels[:1000], genuine.labels)
    mse = ((d.images[:1000].float() - genuine.images.float()) ** 2).mean()
    psnr = 10 * torch.log10(255.0 ** 2 / mse)
    assert 25 < psnr < 40  # JPEG q75 is ~30 dB; misaligned images would be ~11 dB
    # decoded once per process
    again = load_classification("cifar10", "test-jpeg", root)
    assert torch.equal(again.images, d.images) and again.images.data_ptr() != d.images.data_ptr()


# ---------------------------------------------------------------- bundled sample, no data root

def test_mnist_sample_needs_no_root(no_data_env):
    train = load_classification("mnist-sample", "train")
    test = load_classification("mnist-sample", "test")
    assert train.images.shape == (2_000, 1, 28, 28) and train.images.dtype == torch.uint8
    assert test.images.shape == (1_000, 1, 28, 28)
    assert torch.bincount(train.labels).tolist() == [200] * 10
    assert train.labels.dtype == torch.int64
    assert train.mean == (0.1307,)


def test_mnist_sample_matches_mnist(mnist_test):
    sample = load_classification("mnist-sample", "test")
    assert torch.equal(sample.images, mnist_test.images[:1000])
    assert torch.equal(sample.labels, mnist_test.labels[:1000])


def test_subset_and_len():
    d = load_classification("mnist-sample", "test")
    sub = d.subset(torch.tensor([3, 1, 4]))
    assert isinstance(sub, ClassificationData) and len(sub) == 3
    assert torch.equal(sub.images[1], d.images[1]) and sub.labels[2] == d.labels[4]
    assert (sub.name, sub.split, sub.classes) == (d.name, d.split, d.classes)
    assert len(d.subset([0, 1])) == 2 and len(d.subset(slice(0, 10))) == 10


# ---------------------------------------------------------------- train/val split

def test_train_val_split_properties():
    train, val = train_val_split(1000, 0.1, seed=0)
    assert len(val) == 100 and len(train) == 900
    assert torch.equal(torch.sort(torch.cat([train, val])).values, torch.arange(1000))
    assert torch.equal(train, train.sort().values) and torch.equal(val, val.sort().values)
    assert train.dtype == torch.int64
    train2, val2 = train_val_split(1000, 0.1, seed=0)
    assert torch.equal(val, val2) and torch.equal(train, train2)
    _, val3 = train_val_split(1000, 0.1, seed=1)
    assert not torch.equal(val, val3)
    assert not torch.equal(val, torch.arange(900, 1000))  # shuffled, not a tail slice


def test_train_val_split_zero_fraction():
    train, val = train_val_split(7, 0.0, seed=3)
    assert val.numel() == 0 and torch.equal(train, torch.arange(7))


@pytest.mark.parametrize("n, frac", [(10, 1.0), (10, -0.1), (-1, 0.1)])
def test_train_val_split_rejects(n, frac):
    with pytest.raises(UserError):
        train_val_split(n, frac, seed=0)


# ---------------------------------------------------------------- error paths

def test_unknown_dataset_lists_valid_names():
    with pytest.raises(DataError) as info:
        load_classification("imagenet", "train")
    for name in CLASSIFICATION_DATASETS:
        assert name in str(info.value)


def test_unknown_split():
    with pytest.raises(DataError, match="test-jpeg"):
        load_classification("cifar10", "validation")
    with pytest.raises(DataError, match="train, test"):
        load_classification("mnist", "test-jpeg")


def test_missing_root(no_data_env):
    with pytest.raises(DataError, match="METACOMPRESS_DATA"):
        load_classification("mnist", "train")


def test_missing_file(tmp_path, expect_data_error):
    (tmp_path / "mnist").mkdir()
    with expect_data_error(tmp_path / "mnist" / "train-images-idx3-ubyte.gz", match="not found"):
        load_classification("mnist", "train", tmp_path)


def test_synthetic_idx_roundtrip(tmp_path):
    fake_mnist(tmp_path, n=5)
    d = load_classification("mnist", "test", tmp_path)
    assert d.images.shape == (5, 1, 28, 28) and d.labels.tolist() == [0, 1, 2, 3, 4]


def test_uncompressed_idx_fallback(tmp_path):
    folder = tmp_path / "fashion-mnist"
    folder.mkdir()
    (folder / "train-images-idx3-ubyte").write_bytes(idx_bytes(np.zeros((2, 28, 28))))
    (folder / "train-labels-idx1-ubyte").write_bytes(idx_bytes([1, 2]))
    assert load_classification("fashion-mnist", "train", tmp_path).labels.tolist() == [1, 2]


def test_wrong_magic_message(tmp_path, expect_data_error):
    folder = fake_mnist(tmp_path)
    path = folder / "t10k-images-idx3-ubyte.gz"
    write_gz(path, idx_bytes(np.arange(5)))  # a label file under the image-file name
    with expect_data_error(path) as info:
        load_classification("mnist", "test", tmp_path)
    assert str(info.value) == (
        f"{path}: not an idx3 image file (magic 0x00000801, expected 0x00000803)")


def test_text_file_named_gz(tmp_path, expect_data_error):
    folder = fake_mnist(tmp_path, prefix="train")
    path = folder / "train-images-idx3-ubyte.gz"
    path.write_text("this is not a gzip file\n")
    with expect_data_error(path, match="not a gzip file"):
        load_classification("mnist", "train", tmp_path)


def test_truncated_gzip_stream(tmp_path, expect_data_error):
    folder = fake_mnist(tmp_path, n=50)
    path = folder / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-200])
    with expect_data_error(path, match="truncated gzip"):
        load_classification("mnist", "test", tmp_path)


def test_truncated_idx_payload(tmp_path, expect_data_error):
    folder = fake_mnist(tmp_path, n=5)
    path = folder / "t10k-images-idx3-ubyte.gz"
    write_gz(path, idx_bytes(np.zeros((5, 28, 28)))[:-10])  # valid gzip, short content
    with expect_data_error(path, match=r"truncated: header declares 5x28x28"):
        load_classification("mnist", "test", tmp_path)


def test_truncated_real_idx_file(data_file, tmp_path, expect_data_error):
    src = data_file("mnist/t10k-images-idx3-ubyte.gz")
    dst = tmp_path / "mnist" / src.name
    dst.parent.mkdir()
    dst.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    shutil.copy(data_file("mnist/t10k-labels-idx1-ubyte.gz"), tmp_path / "mnist")
    with expect_data_error(dst, match="truncated"):
        load_classification("mnist", "test", tmp_path)


def test_image_size_and_count_mismatch(tmp_path):
    fake_mnist(tmp_path, size=32)
    with pytest.raises(DataError, match="expected 28x28"):
        load_classification("mnist", "test", tmp_path)
    folder = fake_mnist(tmp_path / "b", n=5)
    write_gz(folder / "t10k-labels-idx1-ubyte.gz", idx_bytes([1, 2, 3]))
    with pytest.raises(DataError, match="3 labels but"):
        load_classification("mnist", "test", tmp_path / "b")


def test_corrupt_npz(tmp_path, expect_data_error):
    path = tmp_path / "cifar10" / "cifar10_genuine_subset.npz"
    path.parent.mkdir()
    path.write_bytes(b"PK\x03\x04" + bytes(range(256)) * 4)
    with expect_data_error(path, match="not a valid .npz"):
        load_classification("cifar10", "train", tmp_path)


def test_npz_with_corrupt_member(tmp_path, expect_data_error):
    path = tmp_path / "cifar10" / "cifar10_genuine_subset.npz"
    path.parent.mkdir()
    buf = io.BytesIO()
    np.savez_compressed(buf, train_x=np.zeros((4, 32, 32, 3), np.uint8), train_idx=np.arange(4),
                        train_y_all=np.arange(10) % 10, classes=np.array(["a"]))
    raw = bytearray(buf.getvalue())
    raw[60:200] = bytes(140)  # smash compressed data of the first member
    path.write_bytes(bytes(raw))
    with expect_data_error(path):
        load_classification("cifar10", "train", tmp_path)


def test_npz_pickled_arrays_are_not_loaded(tmp_path, expect_data_error):
    path = tmp_path / "cifar10" / "cifar10_genuine_subset.npz"
    path.parent.mkdir()
    obj = np.empty(1, dtype=object)
    obj[0] = {"evil": True}
    np.savez(path, train_x=obj, train_idx=obj, train_y_all=obj, classes=obj)
    with expect_data_error(path, match="pickle"):
        load_classification("cifar10", "train", tmp_path)


def test_npz_missing_keys_and_bad_shapes(tmp_path):
    path = tmp_path / "cifar10" / "cifar10_genuine_subset.npz"
    path.parent.mkdir()
    np.savez(path, train_x=np.zeros((2, 32, 32, 3), np.uint8))
    with pytest.raises(DataError, match="missing arrays train_idx"):
        load_classification("cifar10", "train", tmp_path)
    classes = np.array(["airplane", "automobile", "bird", "cat", "deer",
                        "dog", "frog", "horse", "ship", "truck"])
    np.savez(path, train_x=np.zeros((2, 3, 32, 32), np.uint8), train_idx=np.arange(2),
             train_y_all=np.arange(2), classes=classes)
    with pytest.raises(DataError, match=r"expected uint8\[N, 32, 32, 3\]"):
        load_classification("cifar10", "train", tmp_path)
    np.savez(path, train_x=np.zeros((2, 32, 32, 3), np.uint8), train_idx=np.array([0, 5]),
             train_y_all=np.arange(2), classes=classes)
    with pytest.raises(DataError, match="out of range"):
        load_classification("cifar10", "train", tmp_path)


def test_cifar_jpeg_tar_not_a_tar(tmp_path, expect_data_error):
    path = tmp_path / "cifar10" / "cifar10_test_jpeg_q75_YoongiKim.tar"
    path.parent.mkdir()
    path.write_bytes(b"not a tar" * 100)
    # tarfile's ReadError text spans several lines; UserError folds it onto one
    with expect_data_error(path, match="not a readable tar archive"):
        load_classification("cifar10", "test-jpeg", tmp_path)


def test_zip_is_not_an_npz_of_the_right_kind(tmp_path):
    path = tmp_path / "cifar10" / "cifar10_genuine_subset.npz"
    path.parent.mkdir()
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("readme.txt", "hello")
    with pytest.raises(DataError, match="missing arrays"):
        load_classification("cifar10", "test", tmp_path)


def test_cifar_jpeg_tar_synthetic(tmp_path):
    """Folder names are mapped to the canonical class order; without test_index.csv the
    members are ordered by (class, file name)."""
    import tarfile

    from PIL import Image

    path = tmp_path / "cifar10" / "cifar10_test_jpeg_q75_YoongiKim.tar"
    path.parent.mkdir()
    with tarfile.open(path, "w") as tar:
        for folder, value in [("Truck", 250), ("cars", 100), ("airplane", 10), ("cars", 120)]:
            buf = io.BytesIO()
            Image.new("RGB", (32, 32), (value, value, value)).save(buf, format="JPEG")
            name = f"test/{folder}/{value:04d}.jpg"
            info = tarfile.TarInfo(name)
            info.size = len(buf.getvalue())
            tar.addfile(info, io.BytesIO(buf.getvalue()))
    d = load_classification("cifar10", "test-jpeg", tmp_path)
    assert d.labels.tolist() == [0, 1, 1, 9]
    assert [int(v) for v in d.images[:, 0, 0, 0]] == pytest.approx([10, 100, 120, 250], abs=3)
