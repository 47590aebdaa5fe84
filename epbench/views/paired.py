"""The paired table of training runs: each EP estimator against BPTT, seed by seed, with the
difference's confidence interval and the equivalence verdict (epbench.views.equivalence,
docs/theory.md §5.1).

What comes in: `train` records. EP runs are grouped by model, preset, backend, device, dtype and
estimator (and the rest of their configuration); each seed's EP run is paired with the BPTT run
of the same seed whose configuration is the same once what BPTT does not read is set aside — the
estimator, β and `train.algorithms` — so an estimator comparison that trained BPTT once per seed
(`train.algorithms = ["ep"]` for the other estimators) pairs every estimator with it. Only runs
that completed every epoch of their configuration are paired. Groups of one model and estimator
that differ in another setting (`--set model.output_derivative=false`) are rows of their own, the
setting named in the `settings` column (epbench.views.settings). What goes out: text.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from tabulate import tabulate

from epbench.config.tasks import config_hash
from epbench.core.record import Record, metrics_of
from epbench.views.equivalence import DEFAULT_MARGIN, describe, paired
from epbench.views.format import AnyRecord, num, records_in
from epbench.views.settings import record_settings
from epbench.views.train import mean_std

# What BPTT does not read: left out of the configuration a BPTT run is matched by.
EP_ONLY = {"dynamics": ("estimator", "beta", "betas", "nudge", "points"), "train": ("algorithms",)}


def _without(config: Mapping[str, Any], drop: Mapping[str, tuple[str, ...]]) -> str:
    """The hash of `config` without the fields `drop` names (section → keys)."""
    out = {}
    for section, value in config.items():
        if section in drop and isinstance(value, Mapping):
            value = {k: v for k, v in value.items() if k not in drop[section]}
        out[section] = value
    return config_hash(out)


def _complete(record: Record, algorithm: str) -> Mapping[str, Any] | None:
    """`metrics.train[algorithm]` when that run completed all its epochs, else None."""
    block = metrics_of(record, "train").get(algorithm)
    if not isinstance(block, Mapping) or block.get("status") != "ok":
        return None
    epochs = (record.config.get("train") or {}).get("epochs", 1)
    return block if len(block.get("test_error") or []) == epochs else None


def _where(record: Record) -> tuple:
    return (record.preset, record.backend, record.device, record.dtype)


def pairs(records: Iterable[AnyRecord]) -> dict[tuple, list[tuple[int, Mapping, Mapping]]]:
    """(model, estimator, preset, backend, device, dtype, epochs, settings) → [(seed, EP run,
    BPTT run)] (module doc), the last record of a seed winning; `settings` names what sets the
    group apart from the other groups of its model ("" for none, epbench.views.settings)."""
    train = [r for r in records_in(records) if r.measurement == "train" and r.status != "skipped"]
    bptt: dict[tuple, Mapping] = {}
    for r in train:
        run = _complete(r, "bptt")
        if run is not None:
            bptt[(_without(r.config, EP_ONLY), *_where(r), r.seed)] = run
    groups: dict[tuple, dict[int, tuple[Mapping, Mapping]]] = {}
    firsts: dict[tuple, Record] = {}
    for r in train:
        run = _complete(r, "ep")
        other = bptt.get((_without(r.config, EP_ONLY), *_where(r), r.seed))
        if run is None or other is None:
            continue
        model = r.variant.get("model", r.cell)
        epochs = len(run["test_error"])
        rest = _without(r.config, {"train": ("algorithms",)})
        key = (model, r.estimator, *_where(r), epochs, rest)
        groups.setdefault(key, {})[r.seed] = (run, other)
        firsts.setdefault(key, r)
    settings = record_settings(firsts)
    return {
        (*key[:-1], settings[key]): [(seed, ep, bp) for seed, (ep, bp) in sorted(by_seed.items())]
        for key, by_seed in groups.items()
    }


HEADERS = (
    "model",
    "estimator",
    "settings",
    "preset",
    "backend",
    "dtype",
    "epochs",
    "seeds",
    "EP test %",
    "BPTT test %",
    "EP train %",
    "BPTT train %",
    "EP − BPTT test [95 % CI]",
    "p (TOST)",
    "verdict",
)


def paired_table(records: Iterable[AnyRecord], *, margin: float = DEFAULT_MARGIN) -> str:
    """One row per model, EP estimator and other settings (and where it ran): final test and
    train errors of EP and BPTT (mean ± std over the paired seeds), the EP − BPTT test-error
    difference with its 95 % interval, the TOST p-value and the verdict at ±`margin` points."""
    rows = []
    for key, found in pairs(records).items():
        model, estimator, preset, backend, _, dtype, epochs, settings = key
        ep = [run for _, run, _ in found]
        bp = [run for _, _, run in found]
        last = {
            "ep_test": [run["test_error"][-1] for run in ep],
            "bptt_test": [run["test_error"][-1] for run in bp],
            "ep_train": [run["train_error"][-1] for run in ep],
            "bptt_train": [run["train_error"][-1] for run in bp],
        }
        stats = paired([e - b for e, b in zip(last["ep_test"], last["bptt_test"], strict=True)],
                       margin=margin)  # fmt: skip
        rows.append([
            model, estimator, settings or "—", preset, backend, dtype, epochs,
            ",".join(str(seed) for seed, _, _ in found),
            mean_std(last["ep_test"]), mean_std(last["bptt_test"]),
            mean_std(last["ep_train"]), mean_std(last["bptt_train"]),
            describe(stats), num(stats.p_equivalence, ".3f"),
            f"{stats.verdict} (±{margin:g})" + (f": {stats.why}" if stats.why else ""),
        ])  # fmt: skip
    return tabulate(rows, headers=list(HEADERS), tablefmt="github")
