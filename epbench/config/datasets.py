"""Datasets as numpy arrays: MNIST and Fashion-MNIST IDX files, and the toy model's random batches.

Files are the four standard IDX files of each dataset (`train-images-idx3-ubyte.gz`, …), gzipped or
raw. They are looked up, in this order, in:

1. the `data_dir` argument (the CLI's `--data-dir`);
2. every folder of the `EPBENCH_DATA` environment variable (an `os.pathsep`-separated list);
3. the cache folder: `EPBENCH_CACHE`, else `$XDG_CACHE_HOME/epbench`, else `~/.cache/epbench`.

In each of these roots the files may sit in `<root>/<dataset>/` or in `<root>/` itself, as `NAME.gz`
or as the uncompressed `NAME`. Every file is checked against its known SHA-256 (of the `.gz`, or of
the uncompressed IDX) before use (pooch's `file_hash`). A file found nowhere is downloaded (unless
`download=False`) through pooch from the public mirrors, tried in order, or from the
comma-separated base URLs of `EPBENCH_MIRRORS`, into `<cache>/<dataset>/`: streamed to a temporary
file in that folder, verified, then moved into place, so no partial or corrupted file is ever
left behind. A file found locally is used without any network access.

Every problem with a file is a `DataError` whose message is one line naming the file.
"""

from __future__ import annotations

import gzip
import logging
import os
import re
import sys
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import MappingProxyType

import numpy as np

from epbench.core.errors import DataError, UnknownNameError
from epbench.core.spec import DTYPES

# file name → (SHA-256 of NAME.gz, SHA-256 of the uncompressed NAME)
CHECKSUMS = MappingProxyType(
    {
        "mnist": MappingProxyType(
            {
                "train-images-idx3-ubyte": (
                    "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                    "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
                ),
                "train-labels-idx1-ubyte": (
                    "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                    "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
                ),
                "t10k-images-idx3-ubyte": (
                    "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                    "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
                ),
                "t10k-labels-idx1-ubyte": (
                    "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
                    "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
                ),
            }
        ),
        "fashion-mnist": MappingProxyType(
            {
                "train-images-idx3-ubyte": (
                    "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
                    "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
                ),
                "train-labels-idx1-ubyte": (
                    "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
                    "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
                ),
                "t10k-images-idx3-ubyte": (
                    "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
                    "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
                ),
                "t10k-labels-idx1-ubyte": (
                    "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
                    "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
                ),
            }
        ),
    }
)
DATASETS = tuple(CHECKSUMS)
SPLITS = MappingProxyType(
    {
        "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
        "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
    }
)
MIRRORS = MappingProxyType(
    {
        "mnist": (
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
        "fashion-mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    }
)
HOW_TO_PROVIDE = "put the IDX files in a folder and pass --data-dir DIR or set EPBENCH_DATA=DIR"
TIMEOUT_S = 30.0
IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049
CLASSES = 10


# ---------------------------------------------------------------------------------------------
# IDX parsing


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Parse one IDX file strictly; gzip-compressed when its name ends in `.gz`, raw otherwise.

    In: the path of an image file (magic 2051: uint8, 3 dims) or a label file (magic 2049: uint8,
    1 dim); dims are big-endian uint32 and the payload must hold exactly their product of bytes.
    Out: a writable uint8 array of shape `dims` (e.g. (60000, 28, 28) or (60000,)).
    No checksum is checked here (see `find_file`). Raises `DataError` naming the file.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DataError(f"cannot read {path}: {err.strerror or err}") from None
    if path.name.endswith(".gz"):
        data = _gunzip(data, path)
    return _parse_idx(data, path)


def _gunzip(data: bytes, path: Path) -> bytes:
    if data[:2] != b"\x1f\x8b":
        raise DataError(
            f"expected a gzip file (named .gz), found one starting with {data[:4].hex(' ')!r} "
            f"in {path}"
        )
    try:
        return gzip.decompress(data)
    except EOFError:
        raise DataError(
            f"expected a complete gzip stream, found a truncated one in {path}"
        ) from None
    except (OSError, zlib.error) as err:
        raise DataError(f"expected valid gzip data, found corrupt data ({err}) in {path}") from None


def _parse_idx(data: bytes, path: Path) -> np.ndarray:
    if len(data) < 4:
        raise DataError(f"expected a 4-byte IDX magic number, found a {len(data)}-byte file {path}")
    magic = int.from_bytes(data[:4], "big")
    if magic not in (IMAGES_MAGIC, LABELS_MAGIC):
        hint = " (the file looks gzip-compressed: name it *.gz)" if data[:2] == b"\x1f\x8b" else ""
        raise DataError(
            f"expected magic 2051 (images) or 2049 (labels), found {magic} in {path}{hint}"
        )
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"expected {header} header bytes, found {len(data)} in {path}")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected, found = int(np.prod(dims)), len(data) - header
    if found != expected:
        what = "pixels" if magic == IMAGES_MAGIC else "labels"
        extra = " (trailing data)" if found > expected else ""
        raise DataError(
            f"expected {expected} bytes of {what} after the header, found {found}{extra} in {path}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims).copy()


def load_idx_pair(
    images_path: str | os.PathLike[str],
    labels_path: str | os.PathLike[str],
    *,
    dtype: str = "float64",
) -> tuple[np.ndarray, np.ndarray]:
    """Read an image file and its label file (no checksum) into training-ready arrays.

    In: the paths of an IDX image file of 28×28 images and of its IDX label file (classes 0…9).
    Out: `(x, labels)`: x of shape (n, 784) with pixels scaled to [0, 1] in `dtype`, labels int64
    of shape (n,). Raises `DataError` when the files disagree on n or hold something else.
    """
    x, labels = read_idx(images_path), read_idx(labels_path)
    if x.ndim != 3 or x.shape[1:] != (28, 28):
        raise DataError(f"expected 28x28 images, found shape {x.shape} in {images_path}")
    if labels.ndim != 1:
        raise DataError(f"expected a label file (magic 2049), found images in {labels_path}")
    if len(x) != len(labels):
        raise DataError(
            f"expected as many labels as images, found {len(x)} images in {images_path} "
            f"and {len(labels)} labels in {labels_path}"
        )
    if labels.size and labels.max() >= CLASSES:
        raise DataError(f"expected labels 0..9, found {labels.max()} in {labels_path}")
    x = x.reshape(len(x), -1).astype(_float_dtype(dtype))
    x /= 255
    return x, labels.astype(np.int64)


# ---------------------------------------------------------------------------------------------
# Finding, verifying and downloading files


def cache_dir() -> Path:
    """The download cache: `EPBENCH_CACHE`, else `$XDG_CACHE_HOME/epbench`, else `~/.cache/epbench`.

    Read from the environment at each call (nothing is remembered between calls).
    """
    if os.environ.get("EPBENCH_CACHE"):
        return Path(os.environ["EPBENCH_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "epbench"


def search_folders(dataset: str, *, data_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """The folders searched for `dataset`'s files, in order (see the module docstring).

    In: a dataset name and the optional explicit data folder. Out: `<root>/<dataset>` then `<root>`
    for each root: `data_dir`, the folders of `EPBENCH_DATA`, the cache folder.
    """
    _checksums(dataset)
    roots: list[Path] = []
    if data_dir is not None:
        root = Path(data_dir).expanduser()
        if not root.is_dir():
            raise DataError(f"expected a data folder, found no folder {root} (--data-dir)")
        roots.append(root)
    env = os.environ.get("EPBENCH_DATA", "")
    roots += [Path(entry).expanduser() for entry in env.split(os.pathsep) if entry.strip()]
    roots.append(cache_dir())
    folders: list[Path] = []
    for root in roots:
        for folder in (root / dataset, root):
            if folder not in folders:
                folders.append(folder)
    return folders


def find_file(
    dataset: str,
    name: str,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
) -> Path:
    """Locate one verified file of a dataset, downloading it into the cache when found nowhere.

    In: a dataset ("mnist", "fashion-mnist"), a file name without `.gz` (e.g.
    "t10k-labels-idx1-ubyte"), the optional explicit data folder, and whether to download.
    Out: the path of `NAME.gz` or `NAME` whose SHA-256 matches the known one.
    Raises `DataError` on a checksum mismatch, or when the file is missing and cannot be downloaded.
    """
    known = _checksums(dataset)
    if name not in known:
        raise UnknownNameError(f"{dataset} file", name, list(known))
    gz_sha, raw_sha = known[name]
    folders = search_folders(dataset, data_dir=data_dir)
    for folder in folders:
        for path, expected in ((folder / f"{name}.gz", gz_sha), (folder / name, raw_sha)):
            if path.is_file():
                _verify(path, expected, dataset=dataset)
                return path
    looked = f"cannot find {name}.gz or {name} for {dataset}: looked in " + ", ".join(
        map(str, folders)
    )
    if not download:
        raise DataError(f"{looked}; downloading is off; {HOW_TO_PROVIDE}")
    return _download(dataset, name, gz_sha, looked=looked)


def fetch_files(
    dataset: str,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
) -> dict[str, Path]:
    """Locate (and download when missing) all four files of a dataset; see `find_file`.

    Out: file name (without `.gz`) → verified path.
    """
    return {
        name: find_file(dataset, name, data_dir=data_dir, download=download)
        for name in _checksums(dataset)
    }


def _checksums(dataset: str) -> MappingProxyType:
    if dataset not in CHECKSUMS:
        raise UnknownNameError("dataset", dataset, DATASETS)
    return CHECKSUMS[dataset]


def _verify(path: Path, expected: str, *, dataset: str) -> None:
    import pooch  # a well-kept library does the hashing and the downloads; imported on use

    try:
        found = pooch.file_hash(str(path), alg="sha256")
    except OSError as err:
        raise DataError(f"cannot read {path}: {err.strerror or err}") from None
    if found == expected:
        return
    other = [  # a file of the other dataset (same names) gets a precise hint
        f" (that is the {other} file {name}: put {dataset} files in a folder named {dataset})"
        for other, files in CHECKSUMS.items()
        for name, digests in files.items()
        if other != dataset and found in digests
    ]
    raise DataError(
        f"checksum mismatch for {path}: expected SHA-256 {expected[:16]}…, found {found[:16]}…"
        + (other[0] if other else f"; {_diagnose(path)}: replace or delete it")
    )


def _diagnose(path: Path) -> str:
    """Why a file with a wrong checksum is wrong, when its IDX structure tells (magic, length)."""
    try:
        read_idx(path)
    except DataError as err:
        return str(err).replace(f" in {path}", "").replace(f" {path}", "")
    return "the file is a well-formed IDX file but not the original one"


def _mirrors(dataset: str) -> tuple[str, ...]:
    env = os.environ.get("EPBENCH_MIRRORS", "")
    custom = tuple(url.strip() for url in env.split(",") if url.strip())
    return custom or MIRRORS[dataset]


def _download(dataset: str, name: str, expected: str, *, looked: str) -> Path:
    """Fetch `NAME.gz` from the first mirror that serves it whole into `<cache>/<dataset>/`,
    through pooch: streamed to a temporary file in that folder, its SHA-256 checked, then moved
    into place (a wrong or partial download is deleted). Returns the verified file."""
    import pooch
    import requests

    folder = cache_dir() / dataset
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(
            f"{looked}; cannot create the cache folder {folder}: {_short(err)}; {HOW_TO_PROVIDE}"
        ) from None
    downloader = pooch.HTTPDownloader(progressbar=sys.stderr.isatty(), timeout=TIMEOUT_S)
    failures = []
    for url in (base.rstrip("/") + f"/{name}.gz" for base in _mirrors(dataset)):
        try:
            with _quiet(pooch.get_logger()):  # errors are ours to report, in one line
                found = pooch.retrieve(
                    url,
                    known_hash=f"sha256:{expected}",
                    fname=f"{name}.gz",
                    path=folder,
                    downloader=downloader,
                )
        except ValueError as err:  # pooch: the downloaded file's hash is not the known one
            failures.append(f"{url}: checksum mismatch ({_short(err)})")
        except (OSError, requests.RequestException) as err:  # HTTP errors, refusals, timeouts
            failures.append(f"{url}: {_short(err)}")
        else:
            return Path(found)
    raise DataError(f"{looked}; download failed: {'; '.join(failures)}; {HOW_TO_PROVIDE}")


@contextmanager
def _quiet(logger: logging.Logger) -> Iterator[None]:
    """`logger` at WARNING for the block (pooch announces each download at INFO on stderr; the
    progress bar on a terminal says as much), then at its level again."""
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def _short(err: BaseException, limit: int = 80) -> str:
    """One short line for an exception: `HTTP 404 Not Found`, `Connection refused`."""
    response = getattr(err, "response", None)
    if response is not None and getattr(response, "status_code", None):
        text = f"HTTP {response.status_code} {response.reason}"
    elif isinstance(err, OSError) and err.strerror:
        text = err.strerror
    else:
        text = str(err)
        refused = re.search(r"\[Errno -?\d+\] [^'\"\])]+", text)
        text = refused.group(0) if refused else text
    text = " ".join(text.split()) or type(err).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---------------------------------------------------------------------------------------------
# Splits, batches, toy data


def load_split(
    dataset: str,
    split: str,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
    dtype: str = "float64",
) -> tuple[np.ndarray, np.ndarray]:
    """Load one split of MNIST or Fashion-MNIST, in the files' canonical order.

    In: dataset "mnist" or "fashion-mnist"; split "train" (60000) or "test" (10000); where to
    look (`data_dir`, then `EPBENCH_DATA`, then the cache; see the module docstring); whether to
    download a missing file.
    Out: `(x, labels)`: x of shape (n, 784), pixels scaled to [0, 1] in `dtype`; labels int64 (n,).
    """
    _checksums(dataset)
    if split not in SPLITS:
        raise UnknownNameError("split", split, list(SPLITS))
    _float_dtype(dtype)
    images, labels = (
        find_file(dataset, name, data_dir=data_dir, download=download) for name in SPLITS[split]
    )
    return load_idx_pair(images, labels, dtype=dtype)


def one_hot(labels: np.ndarray, *, classes: int = CLASSES, dtype: str = "float64") -> np.ndarray:
    """Integer labels of shape (n,) → one-hot targets of shape (n, classes) in `dtype`."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or (labels.size and (labels.min() < 0 or labels.max() >= classes)):
        raise DataError(
            f"expected a 1-D array of labels in 0..{classes - 1}, found shape {labels.shape}"
            + (f" with values {labels.min()}..{labels.max()}" if labels.size else "")
        )
    out = np.zeros((len(labels), classes), dtype=_float_dtype(dtype))
    out[np.arange(len(labels)), labels] = 1
    return out


def toy_batch(
    *, inputs: int, outputs: int, batch: int, seed: int, dtype: str = "float64"
) -> tuple[np.ndarray, np.ndarray]:
    """A random batch for the toy model (docs/theory.md §3, "Models"): inputs U[0,1), one-hot
    targets.

    In: widths, batch size and seed. Out: `(x, y)`, x of shape (batch, inputs), y one-hot of shape
    (batch, outputs), both in `dtype`. Drawn from `np.random.default_rng(seed)`: x first (in
    float64, then cast, so float32 and float64 batches agree up to rounding), then the classes.
    """
    rng = np.random.default_rng(seed)
    x = rng.random((batch, inputs)).astype(_float_dtype(dtype))
    y = one_hot(rng.integers(0, outputs, size=batch), classes=outputs, dtype=dtype)
    return x, y


def batch_of(
    x: np.ndarray, y: np.ndarray, *, batch: int, index: int
) -> tuple[np.ndarray, np.ndarray]:
    """The `index`-th mini-batch (0 = the first) of a split in file order, unshuffled.

    In: the split's arrays (same length n), the batch size, the batch index (DataSpec.index).
    Out: views `x[index*batch : (index+1)*batch]` and the same rows of y.
    Raises `DataError` when the batch does not fit wholly inside the split.
    """
    if len(x) != len(y):
        raise DataError(f"expected as many targets as inputs, found {len(x)} and {len(y)}")
    full = len(x) // batch if batch > 0 else 0
    if batch < 1 or not 0 <= index < full:
        raise DataError(
            f"expected a batch index in 0..{full - 1} for batch size {batch} "
            f"({len(x)} examples), found {index}"
        )
    rows = slice(index * batch, (index + 1) * batch)
    return x[rows], y[rows]


def epoch_batches(n: int, *, batch: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Index arrays of one shuffled training epoch over n examples.

    In: the number of examples, the batch size, the generator that shuffles (advanced once).
    Out: `n // batch` int64 index arrays of `batch` indices each, from one permutation. The last
    partial batch (n % batch examples) is dropped, so every SGD step averages over `batch` examples;
    a new permutation each epoch means every example is still seen on average.
    """
    if not 1 <= batch <= n:
        raise DataError(f"expected a batch size in 1..{n} ({n} examples), found {batch}")
    order = rng.permutation(n)
    return [order[i * batch : (i + 1) * batch] for i in range(n // batch)]


def _float_dtype(dtype: str | np.dtype) -> np.dtype:
    try:
        resolved = np.dtype(dtype)
    except TypeError:
        resolved = None
    if resolved is None or resolved.name not in DTYPES:
        raise UnknownNameError("dtype", str(dtype), DTYPES)
    return resolved
