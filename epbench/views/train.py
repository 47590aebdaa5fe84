"""Views of `train` records (epbench.measurements.training): one row per record, the per-epoch
text of one record, the summary over seeds and our Table 1 beside the paper's (docs/theory.md
§5).

What comes in: records whose `metrics.train[algorithm]` (algorithm `ep`, `bptt`) holds the
per-epoch lists `test_error`, `train_error`, `loss`, `epoch_seconds` and `samples_per_s`,
`epochs_done`, `compile_seconds`, `peak_memory_bytes`, `resumed_from`, and whose
`metrics.ep_minus_bptt.test_error` is the paired difference of the last epoch. What goes out:
text.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any

from tabulate import tabulate

from epbench.core.record import Record, metrics_of
from epbench.views.format import AnyRecord, heading, num, reason, records_in
from epbench.views.settings import record_settings

# docs/theory.md §5, Table 1 as the paper reports it: epochs, then the test error (%) of EP and
# of BPTT. The fully connected models reach "about 2 %" with both; P-conv ≈ 1.0 % (EP) and
# ≈ 0.9 % (BPTT).
PAPER_TABLE1 = MappingProxyType(
    {
        "EB-1h": (30, 2.0, 2.0),
        "EB-2h": (50, 2.0, 2.0),
        "P-1h": (30, 2.0, 2.0),
        "P-2h": (50, 2.0, 2.0),
        "P-3h": (100, 2.0, 2.0),
        "P-conv": (40, 1.0, 0.9),
    }
)
AGAINST = ("paper",)


def train_run(record: Record, algorithm: str) -> Mapping[str, Any]:
    """`metrics.train[algorithm]` of a training record (empty when it has none)."""
    block = metrics_of(record, "train").get(algorithm)
    return block if isinstance(block, Mapping) else MappingProxyType({})


def paired(record: Record) -> float | None:
    """EP − BPTT of the last epoch's test error (percent points), when both completed it."""
    return metrics_of(record, "ep_minus_bptt").get("test_error")


def _last(values: Any) -> float | None:
    return values[-1] if values else None


def _mean(values: Any) -> float | None:
    values = [v for v in values or [] if v is not None]
    return sum(values) / len(values) if values else None


def _count(values: Any) -> int | None:
    return len(values) if values else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _table(rows: list[list[Any]], headers: Iterable[str]) -> str:
    return tabulate(rows, headers=list(headers), tablefmt="github")


TRAIN_HEADERS = (
    "cell",
    "preset",
    "backend",
    "device",
    "dtype",
    "seed",
    "status",
    "epochs EP/BPTT",
    "EP test %",
    "BPTT test %",
    "EP − BPTT",
    "EP train %",
    "BPTT train %",
    "EP s/epoch",
    "BPTT s/epoch",
    "EP/BPTT time",
    "EP img/s",
    "BPTT img/s",
    "reason",
)


def _train_row(r: Record) -> list[Any]:
    ep, bptt = train_run(r, "ep"), train_run(r, "bptt")
    ep_s, bptt_s = _mean(ep.get("epoch_seconds")), _mean(bptt.get("epoch_seconds"))
    return [
        r.cell,
        r.preset,
        r.backend,
        r.device,
        r.dtype,
        r.seed,
        r.status,
        f"{ep.get('epochs_done', 0)}/{bptt.get('epochs_done', 0)}" if ep else "—",
        num(_last(ep.get("test_error")), ".2f"),
        num(_last(bptt.get("test_error")), ".2f"),
        num(paired(r), "+.2f"),
        num(_last(ep.get("train_error")), ".2f"),
        num(_last(bptt.get("train_error")), ".2f"),
        num(ep_s, ".2f"),
        num(bptt_s, ".2f"),
        num(_ratio(ep_s, bptt_s), ".2f"),
        num(ep.get("samples_per_s"), ",.0f"),
        num(bptt.get("samples_per_s"), ",.0f"),
        reason(r, 60),
    ]


def train_table(records: Iterable[AnyRecord]) -> str:
    """One row per training record: the last epoch's test and train errors of EP and BPTT (%),
    their paired difference, the mean seconds per training epoch, the EP/BPTT time ratio and the
    samples/s of each algorithm (or the reason of a skip, failure or divergence)."""
    return _table([_train_row(r) for r in records_in(records)], TRAIN_HEADERS)


def mean_std(values: list[float], fmt: str = ".2f") -> str:
    """`mean ± std` (sample std, n − 1) of a list, `mean` alone for one value, — for none."""
    if not values:
        return "—"
    mean = sum(values) / len(values)
    if len(values) == 1:
        return format(mean, fmt)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    return f"{format(mean, fmt)} ± {format(std, fmt.replace('+', ''))}"


def seed_groups(records: Iterable[AnyRecord]) -> dict[tuple, dict[int, Record]]:
    """Training records grouped by run (cell, preset, backend, device, dtype, configuration hash),
    then by seed; the last record of a seed wins (a rerun replaces an earlier one)."""
    groups: dict[tuple, dict[int, Record]] = {}
    for r in records_in(records):
        if r.measurement != "train" or r.status == "skipped":
            continue
        key = (r.cell, r.preset, r.backend, r.device, r.dtype, r.config_hash)
        groups.setdefault(key, {})[r.seed] = r
    return groups


def has_several_seeds(records: Iterable[AnyRecord]) -> bool:
    """True when some training run (`seed_groups`) has two or more seeds."""
    return any(len(by_seed) > 1 for by_seed in seed_groups(records).values())


def _summary(by_seed: dict[int, Record]) -> dict[str, Any]:
    """Over the seeds of one group whose runs completed: final test errors, the EP − BPTT
    differences paired seed by seed (where the cell trained both: `train.algorithms`), seconds
    per epoch, samples/s."""
    ok = [r for _, r in sorted(by_seed.items()) if r.status == "ok"]

    def values(algorithm: str, key: str, pick: Callable[[Any], Any]) -> list[float]:
        found = [pick(train_run(r, algorithm).get(key)) for r in ok]
        return [v for v in found if v is not None]

    ep_s, bptt_s = values("ep", "epoch_seconds", _mean), values("bptt", "epoch_seconds", _mean)
    return {
        "seeds": [s for s, r in sorted(by_seed.items()) if r in ok],
        "not_ok": sorted(s for s, r in by_seed.items() if r not in ok),
        "ep_test": values("ep", "test_error", _last),
        "bptt_test": values("bptt", "test_error", _last),
        "paired": [d for d in map(paired, ok) if d is not None],
        "ep_seconds": ep_s,
        "bptt_seconds": bptt_s,
        "ratio": _ratio(_mean(ep_s), _mean(bptt_s)),
        "ep_speed": values("ep", "samples_per_s", lambda v: v),
        "bptt_speed": values("bptt", "samples_per_s", lambda v: v),
        # epochs run by each algorithm a seed trained (a cell may train one: `train.algorithms`)
        "epochs": values("ep", "test_error", _count) + values("bptt", "test_error", _count),
    }


SEED_HEADERS = (
    "cell",
    "EP estimator",
    "settings",
    "preset",
    "backend",
    "device",
    "dtype",
    "seeds",
    "not ok",
    "EP test %",
    "BPTT test %",
    "EP − BPTT (paired)",
    "EP s/epoch",
    "BPTT s/epoch",
    "EP/BPTT time",
    "EP img/s",
    "BPTT img/s",
)


def _firsts_and_settings(
    groups: dict[tuple, dict[int, Record]],
) -> tuple[dict[tuple, Record], dict[tuple, str]]:
    """Per run (`seed_groups` key): its first record, and the settings that set it apart from
    the other runs of its model (epbench.views.settings; "" where none)."""
    firsts = {key: next(iter(by_seed.values())) for key, by_seed in groups.items()}
    return firsts, record_settings(firsts)


def seed_summary_table(records: Iterable[AnyRecord]) -> str:
    """One row per run over its seeds, named by cell, EP estimator and the settings that set it
    apart from other runs of its model: final test errors mean ± std, the EP − BPTT difference
    paired by seed (mean ± std), seconds per epoch, EP/BPTT time ratio, samples/s."""
    rows = []
    groups = seed_groups(records)
    firsts, settings = _firsts_and_settings(groups)
    for key, by_seed in groups.items():
        cell, preset, backend, device, dtype, _ = key
        s = _summary(by_seed)
        rows.append(
            [
                cell,
                firsts[key].estimator if s["ep_test"] else "—",
                settings[key] or "—",
                preset,
                backend,
                device,
                dtype,
                ",".join(map(str, s["seeds"])) or "—",
                ",".join(map(str, s["not_ok"])) or "",
                mean_std(s["ep_test"]),
                mean_std(s["bptt_test"]),
                mean_std(s["paired"], "+.2f"),
                mean_std(s["ep_seconds"]),
                mean_std(s["bptt_seconds"]),
                num(s["ratio"], ".2f"),
                mean_std(s["ep_speed"], ",.0f"),
                mean_std(s["bptt_speed"], ",.0f"),
            ]
        )
    return _table(rows, SEED_HEADERS)


PAPER_HEADERS = (
    "model",
    "EP estimator",
    "settings",
    "preset",
    "data",
    "backend",
    "device",
    "dtype",
    "epochs (ours / paper)",
    "seeds",
    "EP test % (ours)",
    "EP (paper)",
    "BPTT test % (ours)",
    "BPTT (paper)",
    "EP − BPTT",
    "EP s/epoch",
    "BPTT s/epoch",
    "EP/BPTT time",
)


def _source(record: Record) -> str:
    data = record.config.get("data")
    return (data.get("source") if isinstance(data, Mapping) else None) or "mnist"


def paper_table(records: Iterable[AnyRecord]) -> str:
    """Our final test errors (mean ± std over seeds) beside the paper's (docs/theory.md §5,
    Table 1, MNIST only), with the epochs run against the paper's, seconds per epoch and the
    EP/BPTT time ratio. Models the paper does not list, or other datasets, show —. Runs of one
    model that differ in more than the estimator name the setting (epbench.views.settings)."""
    rows = []
    groups = seed_groups(records)
    firsts, settings = _firsts_and_settings(groups)
    for key, by_seed in groups.items():
        cell, preset, backend, device, dtype, _ = key
        s = _summary(by_seed)
        some = firsts[key]
        model, source = some.variant.get("model", cell), _source(some)
        paper = PAPER_TABLE1.get(model) if source == "mnist" else None
        epochs = sorted(set(s["epochs"]))
        rows.append(
            [
                model,
                some.estimator if s["ep_test"] else "—",
                settings[key] or "—",
                preset,
                source,
                backend,
                device,
                dtype,
                f"{'/'.join(map(str, epochs)) or '—'} / {paper[0] if paper else '—'}",
                len(s["seeds"]),
                mean_std(s["ep_test"]),
                f"≈ {paper[1]:.1f}" if paper else "—",
                mean_std(s["bptt_test"]),
                f"≈ {paper[2]:.1f}" if paper else "—",
                mean_std(s["paired"], "+.2f"),
                mean_std(s["ep_seconds"]),
                mean_std(s["bptt_seconds"]),
                num(s["ratio"], ".2f"),
            ]
        )
    return _table(rows, PAPER_HEADERS)


def _epoch_rows(ep: Mapping[str, Any], bptt: Mapping[str, Any]) -> list[list[Any]]:
    """Per epoch: train %, test %, loss and seconds of EP, then of BPTT."""
    epochs = max(len(ep.get("test_error", [])), len(bptt.get("test_error", [])))

    def at(block: Mapping[str, Any], key: str, i: int, fmt: str) -> str:
        values = block.get(key) or []
        return num(values[i] if i < len(values) else None, fmt)

    keys = (
        ("train_error", ".2f"),
        ("test_error", ".2f"),
        ("loss", ".4f"),
        ("epoch_seconds", ".2f"),
    )
    return [
        [i + 1] + [at(block, key, i, fmt) for block in (ep, bptt) for key, fmt in keys]
        for i in range(epochs)
    ]


def format_train(record: AnyRecord) -> str:
    """Heading, per-epoch curves of EP and BPTT, and each run's speed, memory and warm-up time
    (and why it diverged); the heading and the reason of a skipped or failed record."""
    r = records_in([record])[0]
    head = heading(r, device=True)
    if r.status in ("skipped", "failed"):
        return f"{head}: {r.reason}"
    ep, bptt = train_run(r, "ep"), train_run(r, "bptt")
    headers = ["epoch"] + [
        f"{a} {what}" for a in ("EP", "BPTT") for what in ("train %", "test %", "loss", "s")
    ]
    lines = [head, _table(_epoch_rows(ep, bptt), headers)]
    for name, block in (("EP", ep), ("BPTT", bptt)):
        if not block:  # not trained in this cell (`train.algorithms`)
            continue
        resumed = block.get("resumed_from")
        lines.append(
            f"{name}: {num(block.get('samples_per_s'), ',.0f')} img/s, warm-up "
            f"{num(block.get('compile_seconds'), '.2f')} s, peak memory "
            f"{num((block.get('peak_memory_bytes') or 0) / 2**20, ',.0f')} MiB"
            + (f", resumed after epoch {resumed}" if resumed else "")
        )
    if r.status == "diverged":
        lines.append(f"diverged: {r.reason}")
    return "\n".join(lines)
