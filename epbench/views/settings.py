"""What tells apart runs of one model that a table would otherwise show alike.

What comes in: the resolved configurations (`Record.config`) of several groups of runs, keyed by
whatever the table groups by. What goes out: per group, the `section.field=value` settings its
configuration has and some other group of the same model lacks or sets otherwise, as text
(`model.output_derivative=false`), or "" where a group has none (the task's own settings).

A table keyed by model and estimator shows two runs of EB-1h with the positive estimator in two
identical rows when one of them ran with `--set model.output_derivative=false`; this column says
which is which without listing every field of either.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Iterable, Mapping
from typing import Any, TypeVar

from epbench.core.record import Record

K = TypeVar("K", bound=Hashable)

# Fields every table already shows in a column of its own, or that do not change the science.
SHOWN = frozenset({"dynamics.estimator", "train.algorithms", "train.epochs", "description"})


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"model": {"clamp": True}}` → `{"model.clamp": True}` (lists and scalars are leaves)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def _text(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def distinguishing(
    groups: Mapping[Hashable, tuple[str, Mapping[str, Any]]],
    *,
    shown: Iterable[str] = SHOWN,
) -> dict[Hashable, str]:
    """For each group (key → (model, configuration)), its settings that another group of the
    same model lacks or sets to another value, `shown` fields left out; "" for none."""
    skip = frozenset(shown)
    flat = {
        key: {k: v for k, v in flatten(config).items() if k not in skip}
        for key, (_, config) in groups.items()
    }
    out: dict[Hashable, str] = {}
    for key, (model, _) in groups.items():
        others = [flat[k] for k, (m, _) in groups.items() if m == model and k != key]
        differs = [
            f"{name}={_text(value)}"
            for name, value in sorted(flat[key].items())
            if any(other.get(name, _MISSING) != value for other in others)
        ]
        out[key] = " ".join(differs)
    return out


_MISSING = object()


def record_settings(runs: Mapping[K, Record]) -> dict[K, str]:
    """`distinguishing` for records (key → record), each record's model its `model` variant (else
    its cell): what a table or figure adds to a run's name so that runs of one model that differ
    in a setting stay apart. Records of one configuration (the seeds of a run) are compared once."""
    distinct: dict[tuple[str, str], tuple[str, Mapping[str, Any]]] = {}
    identity: dict[K, tuple[str, str]] = {}
    for key, r in runs.items():
        model = r.variant.get("model", r.cell)
        identity[key] = (model, json.dumps(r.config, sort_keys=True, default=str))
        distinct.setdefault(identity[key], (model, r.config))
    found = distinguishing(distinct)
    return {key: found[ident] for key, ident in identity.items()}
