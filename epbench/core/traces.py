"""Saved traces: one `.npz` per GDU cell (`epbench run … --save-traces`), no pickle.

Layout: `params/<name>` the canonical initial parameters, `data/x` and `data/y` the batch,
`ep/<name>` and `bptt/<name>` the traces of shape (K, …) (docs/theory.md §2). `save_traces`
writes atomically (a temporary file renamed over the target); `load_traces` reads one back.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

GROUPS = ("params", "data", "ep", "bptt")


def save_traces(
    path: Path,
    *,
    params: dict[str, np.ndarray],
    x: np.ndarray,
    y: np.ndarray,
    ep: dict[str, np.ndarray],
    bptt: dict[str, np.ndarray],
) -> Path:
    """Write the arrays to `path` (its folder is created); returns `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {f"params/{k}": v for k, v in params.items()}
    arrays.update({"data/x": x, "data/y": y})
    arrays.update({f"ep/{k}": v for k, v in ep.items()})
    arrays.update({f"bptt/{k}": v for k, v in bptt.items()})
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(path)
    return path


def load_traces(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """A saved-traces file as {"params": …, "data": …, "ep": …, "bptt": …} (object arrays are
    refused: `allow_pickle=False`)."""
    out: dict[str, dict[str, np.ndarray]] = {group: {} for group in GROUPS}
    with np.load(path, allow_pickle=False) as archive:
        for key in archive.files:
            group, _, name = key.partition("/")
            out.setdefault(group, {})[name] = archive[key]
    return out
