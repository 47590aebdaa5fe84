"""Tests of epbench.config.datasets on the real IDX files (found through EPBENCH_DATA) and a real
local HTTP server for downloads. Tests that need the real files skip, saying how to provide them."""

from __future__ import annotations

import functools
import gzip
import http.server
import os
import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from epbench.config import datasets as data
from epbench.core.errors import DataError, UnknownNameError

TEST_FILES = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
HOW = "set EPBENCH_DATA to a folder holding {}/ with the four IDX .gz files"


def _real_files(dataset: str) -> dict[str, Path]:
    try:
        return data.fetch_files(dataset, download=False)
    except DataError as err:
        pytest.skip(f"{dataset} IDX files not available ({HOW.format(dataset)}): {err}")


@pytest.fixture(scope="session")
def mnist_files() -> dict[str, Path]:
    return _real_files("mnist")


@pytest.fixture(scope="session")
def fashion_files() -> dict[str, Path]:
    return _real_files("fashion-mnist")


@pytest.fixture
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No EPBENCH_DATA, no mirrors override; an empty cache under tmp_path. Returns the cache."""
    cache = tmp_path / "cache"
    monkeypatch.delenv("EPBENCH_DATA", raising=False)
    monkeypatch.delenv("EPBENCH_MIRRORS", raising=False)
    monkeypatch.setenv("EPBENCH_CACHE", str(cache))
    return cache


@pytest.fixture
def serve() -> Iterator:
    """serve(folder) → base URL of a real HTTP server on 127.0.0.1 serving that folder."""
    servers = []

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    def start(folder: Path) -> str:
        handler = functools.partial(Quiet, directory=str(folder))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def _one_line(err: pytest.ExceptionInfo, *needles: object) -> str:
    message = str(err.value)
    assert "\n" not in message
    for needle in needles:
        assert str(needle) in message, message
    return message


# --- real files ------------------------------------------------------------------------------


def test_mnist_splits(mnist_files: dict[str, Path]) -> None:
    x, labels = data.load_split("mnist", "test")
    assert x.shape == (10000, 784) and x.dtype == np.float64
    assert labels.shape == (10000,) and labels.dtype == np.int64
    assert x.min() == 0.0 and x.max() == 1.0
    assert labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    counts = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert np.bincount(labels).tolist() == counts
    assert abs(x.mean() * 255 - 33.7912) < 1e-3  # README's test pixel mean

    x, labels = data.load_split("mnist", "train", dtype="float32")
    assert x.shape == (60000, 784) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    counts = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert np.bincount(labels).tolist() == counts


def test_fashion_mnist_splits(fashion_files: dict[str, Path]) -> None:
    x, labels = data.load_split("fashion-mnist", "test")
    assert x.shape == (10000, 784) and labels.shape == (10000,)
    assert x.min() == 0.0 and x.max() == 1.0
    assert np.bincount(labels).tolist() == [1000] * 10
    x, labels = data.load_split("fashion-mnist", "train", dtype="float32")
    assert x.shape == (60000, 784) and x.dtype == np.float32
    assert np.bincount(labels).tolist() == [6000] * 10


def test_raw_files_and_search_order(
    mnist_files: dict[str, Path], isolated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Raw (uncompressed) files in <data_dir>/mnist/ load exactly like the .gz ones.
    raw = tmp_path / "raw"
    (raw / "mnist").mkdir(parents=True)
    for name in TEST_FILES:
        (raw / "mnist" / name).write_bytes(gzip.decompress(mnist_files[name].read_bytes()))
    x_raw, y_raw = data.load_split("mnist", "test", data_dir=raw, download=False)
    flat = tmp_path / "flat"  # .gz files directly in the root, found through EPBENCH_DATA
    flat.mkdir()
    for name in TEST_FILES:
        shutil.copy(mnist_files[name], flat / f"{name}.gz")
    monkeypatch.setenv("EPBENCH_DATA", f"{tmp_path / 'missing'}{os.pathsep}{flat}")
    x_gz, y_gz = data.load_split("mnist", "test", download=False)
    assert np.array_equal(x_raw, x_gz) and np.array_equal(y_raw, y_gz)

    # data_dir comes before EPBENCH_DATA: a corrupted copy in data_dir is reported.
    bad = tmp_path / "bad"
    bad.mkdir()
    corrupted = bytearray((raw / "mnist" / TEST_FILES[1]).read_bytes())
    corrupted[100] ^= 0xFF
    (bad / TEST_FILES[1]).write_bytes(corrupted)
    with pytest.raises(DataError) as err:
        data.load_split("mnist", "test", data_dir=bad, download=False)
    _one_line(err, "checksum", bad / TEST_FILES[1], "ff7bcfd416de")

    # MNIST files asked for as Fashion-MNIST: mismatch, with a hint saying what the file is.
    with pytest.raises(DataError) as err:
        data.load_split("fashion-mnist", "test", data_dir=flat, download=False)
    _one_line(err, "checksum", "that is the mnist file")


# --- downloads from a real local server ------------------------------------------------------


def test_download_verifies_and_caches(
    mnist_files: dict[str, Path],
    isolated: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    serve,
) -> None:
    good, corrupt = tmp_path / "good", tmp_path / "corrupt"
    good.mkdir()
    corrupt.mkdir()
    for name in TEST_FILES:
        shutil.copy(mnist_files[name], good / f"{name}.gz")
        damaged = bytearray(mnist_files[name].read_bytes())
        damaged[len(damaged) // 2] ^= 0x01
        (corrupt / f"{name}.gz").write_bytes(damaged)

    # Corrupted copies only: a checksum error, and nothing left in the cache.
    monkeypatch.setenv("EPBENCH_MIRRORS", serve(corrupt))
    with pytest.raises(DataError) as err:
        data.load_split("mnist", "test")
    _one_line(err, "checksum mismatch", "t10k-images-idx3-ubyte", "--data-dir")
    assert list((isolated / "mnist").iterdir()) == []

    # A corrupt mirror first, a good one second: the good copy is downloaded and used.
    monkeypatch.setenv("EPBENCH_MIRRORS", f"{serve(corrupt)},{serve(good)}")
    x, labels = data.load_split("mnist", "test")
    assert x.shape == (10000, 784) and labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    cached = sorted(p.name for p in (isolated / "mnist").iterdir())
    assert cached == [f"{name}.gz" for name in TEST_FILES]
    for name in TEST_FILES:
        assert (isolated / "mnist" / f"{name}.gz").read_bytes() == mnist_files[name].read_bytes()

    # Offline afterwards: the cache is enough.
    monkeypatch.setenv("EPBENCH_MIRRORS", _closed_port_url())
    x2, _ = data.load_split("mnist", "test")
    assert np.array_equal(x, x2)


def test_offline_says_how_to_provide(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = _closed_port_url()
    monkeypatch.setenv("EPBENCH_MIRRORS", url)
    with pytest.raises(DataError) as err:
        data.find_file("fashion-mnist", "t10k-labels-idx1-ubyte")
    _one_line(err, "t10k-labels-idx1-ubyte", isolated, url, "--data-dir DIR", "EPBENCH_DATA=DIR")
    assert list((isolated / "fashion-mnist").iterdir()) == []
    with pytest.raises(DataError) as err:
        data.find_file("mnist", "t10k-labels-idx1-ubyte", download=False)
    _one_line(err, "downloading is off", "EPBENCH_DATA=DIR")


def test_http_error_is_reported(
    isolated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, serve
) -> None:
    monkeypatch.setenv("EPBENCH_MIRRORS", serve(tmp_path))  # serves an empty folder: 404
    with pytest.raises(DataError) as err:
        data.find_file("mnist", "t10k-labels-idx1-ubyte")
    _one_line(err, "HTTP 404")


# --- malformed IDX files ---------------------------------------------------------------------


def _idx(magic: int, dims: tuple[int, ...], payload: int) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims)
    return header + bytes(payload)


def test_read_idx_accepts_gz_and_raw(tmp_path: Path) -> None:
    raw = _idx(2051, (2, 28, 28), 2 * 784)
    raw = raw[:16] + bytes(range(256)) * 6 + raw[16 + 1536 :]
    (tmp_path / "a").write_bytes(raw)
    (tmp_path / "a.gz").write_bytes(gzip.compress(raw))
    a, b = data.read_idx(tmp_path / "a"), data.read_idx(tmp_path / "a.gz")
    assert a.shape == (2, 28, 28) and a.dtype == np.uint8 and a.flags.writeable
    assert np.array_equal(a, b) and a.reshape(-1)[:256].tolist() == list(range(256))
    labels = tmp_path / "l"
    labels.write_bytes(_idx(2049, (3,), 0) + bytes([1, 2, 3]))
    assert data.read_idx(labels).tolist() == [1, 2, 3]


@pytest.mark.parametrize(
    ("content", "needles"),
    [
        (_idx(2050, (2, 28, 28), 1568), ["expected magic 2051 (images) or 2049 (labels)", 2050]),
        (_idx(2051, (2, 28, 28), 1000), ["expected 1568 bytes of pixels", "found 1000"]),
        (_idx(2049, (5,), 3), ["expected 5 bytes of labels", "found 3"]),
        (_idx(2049, (5,), 6), ["trailing"]),
        (_idx(2051, (), 0)[:4] + bytes(6), ["expected 16 header bytes, found 10"]),
        (b"\x00\x00", ["4-byte IDX magic"]),
        (gzip.compress(_idx(2049, (1,), 1)), ["gzip-compressed"]),
    ],
)
def test_read_idx_rejects(tmp_path: Path, content: bytes, needles: list) -> None:
    path = tmp_path / "bad-idx1-ubyte"
    path.write_bytes(content)
    with pytest.raises(DataError) as err:
        data.read_idx(path)
    _one_line(err, path, *needles)


def test_read_idx_rejects_bad_gzip(tmp_path: Path) -> None:
    plain = tmp_path / "plain.gz"
    plain.write_bytes(_idx(2049, (1,), 1))
    with pytest.raises(DataError) as err:
        data.read_idx(plain)
    _one_line(err, plain, "expected a gzip file")
    cut = tmp_path / "cut.gz"
    cut.write_bytes(gzip.compress(_idx(2049, (1000,), 1000))[:-12])
    with pytest.raises(DataError) as err:
        data.read_idx(cut)
    _one_line(err, cut, "truncated")


def test_count_mismatch_between_images_and_labels(tmp_path: Path) -> None:
    images, labels = tmp_path / "images.gz", tmp_path / "labels.gz"
    images.write_bytes(gzip.compress(_idx(2051, (3, 28, 28), 3 * 784)))
    labels.write_bytes(gzip.compress(_idx(2049, (2,), 2)))
    with pytest.raises(DataError) as err:
        data.load_idx_pair(images, labels)
    _one_line(err, images, labels, "3 images", "2 labels")
    labels.write_bytes(gzip.compress(_idx(2049, (3,), 0) + bytes([1, 10, 2])))
    with pytest.raises(DataError) as err:
        data.load_idx_pair(images, labels)
    _one_line(err, labels, "labels 0..9, found 10")
    labels.write_bytes(gzip.compress(_idx(2049, (3,), 0) + bytes([1, 9, 2])))
    x, y = data.load_idx_pair(images, labels, dtype="float32")
    assert x.shape == (3, 784) and x.dtype == np.float32 and y.tolist() == [1, 9, 2]


def test_bad_names(isolated: Path, tmp_path: Path) -> None:
    with pytest.raises(UnknownNameError, match="unknown dataset 'cifar'; known: fashion-mnist"):
        data.load_split("cifar", "train")
    with pytest.raises(UnknownNameError, match="unknown split 'valid'"):
        data.load_split("mnist", "valid")
    with pytest.raises(UnknownNameError, match="unknown dtype 'int8'"):
        data.load_split("mnist", "test", dtype="int8")
    with pytest.raises(DataError, match="no folder"):
        data.load_split("mnist", "test", data_dir=tmp_path / "nope")


# --- batches ---------------------------------------------------------------------------------


def test_one_hot() -> None:
    y = data.one_hot(np.array([2, 0, 9]), dtype="float32")
    assert y.dtype == np.float32 and y.shape == (3, 10)
    assert y.argmax(axis=1).tolist() == [2, 0, 9] and y.sum() == 3
    with pytest.raises(DataError, match=r"0\.\.4"):
        data.one_hot(np.array([5]), classes=5)


def test_toy_batch_is_seeded() -> None:
    x, y = data.toy_batch(inputs=5, outputs=10, batch=4, seed=3)
    assert x.shape == (4, 5) and y.shape == (4, 10) and x.dtype == np.float64
    assert ((0 <= x) & (x < 1)).all() and (y.sum(axis=1) == 1).all()
    x2, y2 = data.toy_batch(inputs=5, outputs=10, batch=4, seed=3)
    assert np.array_equal(x, x2) and np.array_equal(y, y2)
    rng = np.random.default_rng(3)  # the documented draw order: x first, then the classes
    assert np.array_equal(x, rng.random((4, 5)))
    assert np.array_equal(y.argmax(axis=1), rng.integers(0, 10, size=4))
    x32, _ = data.toy_batch(inputs=5, outputs=10, batch=4, seed=3, dtype="float32")
    assert x32.dtype == np.float32 and np.allclose(x32, x, atol=1e-7)
    x4, _ = data.toy_batch(inputs=5, outputs=10, batch=4, seed=4)
    assert not np.array_equal(x, x4)


def test_batch_of() -> None:
    x, y = np.arange(20.0).reshape(10, 2), np.arange(10)
    xb, yb = data.batch_of(x, y, batch=3, index=2)
    assert yb.tolist() == [6, 7, 8] and xb[:, 0].tolist() == [12.0, 14.0, 16.0]
    for index in (3, -1):
        with pytest.raises(DataError, match=r"batch index in 0\.\.2"):
            data.batch_of(x, y, batch=3, index=index)
    with pytest.raises(DataError):
        data.batch_of(x, y, batch=0, index=0)


def test_epoch_batches() -> None:
    batches = data.epoch_batches(10, batch=3, rng=np.random.default_rng(0))
    assert [len(b) for b in batches] == [3, 3, 3]  # the last partial batch is dropped
    seen = np.concatenate(batches)
    assert len(set(seen.tolist())) == 9 and seen.max() < 10
    again = data.epoch_batches(10, batch=3, rng=np.random.default_rng(0))
    assert all(np.array_equal(a, b) for a, b in zip(batches, again, strict=True))
    assert not np.array_equal(seen, np.arange(9))  # shuffled (fixed seed: not the identity)
    with pytest.raises(DataError):
        data.epoch_batches(2, batch=3, rng=np.random.default_rng(0))


# --- downloads go through pooch; files present mean no network -----------------------------


def test_downloads_go_through_pooch(
    mnist_files: dict[str, Path], isolated: Path, monkeypatch: pytest.MonkeyPatch, serve
) -> None:
    import pooch

    calls, retrieve = [], pooch.retrieve

    def counted(url: str, **kwargs: object) -> str:
        calls.append((url, kwargs["known_hash"]))
        return retrieve(url, **kwargs)

    served = isolated.parent / "served"
    served.mkdir()
    shutil.copy(mnist_files[TEST_FILES[1]], served / f"{TEST_FILES[1]}.gz")
    monkeypatch.setattr(pooch, "retrieve", counted)
    monkeypatch.setenv("EPBENCH_MIRRORS", serve(served))
    path = data.find_file("mnist", TEST_FILES[1])
    assert path == isolated / "mnist" / f"{TEST_FILES[1]}.gz"
    gz_sha = data.CHECKSUMS["mnist"][TEST_FILES[1]][0]
    assert [hash for _, hash in calls] == [f"sha256:{gz_sha}"]
    assert calls[0][0].startswith("http://127.0.0.1:") and calls[0][0].endswith(".gz")


def test_files_present_mean_no_network(
    mnist_files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a network connection was attempted with the files present")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    assert set(data.fetch_files("mnist")) == set(data.CHECKSUMS["mnist"])
    x, _ = data.load_split("mnist", "test")
    assert x.shape == (10000, 784)
