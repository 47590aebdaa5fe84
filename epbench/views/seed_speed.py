"""Views of `seed-speed` records (epbench.measurements.seed_speed): per model, backend and
algorithm, the samples of all seeds per second at each seed count S and the gain over S = 1,
both measured in the same run; and why: the share of a one-seed step that is fixed cost, the gain
limit that share allows (`gain_limit`), and the arithmetic rate of one seed beside the machine's
GEMM rate (epbench.measurements.seed_speed).

What comes in: records with `metrics.seeds[algorithm][S]` (step_seconds, seed_samples_per_s,
gain, flops_per_s), `metrics.seeds[algorithm]` fixed_seconds and gain_limit, `metrics.machine`
(records made before these were measured show "—" there). What goes out: text.
"""

from __future__ import annotations

from collections.abc import Iterable

from tabulate import tabulate

from epbench.core.record import Record, metrics_of
from epbench.views.format import AnyRecord, heading, num, records_in, showable

LABELS = {"ep": "EP", "bptt": "BPTT"}


def _row(record: Record, algorithm: str, counts: list[str]) -> list[str]:
    block = metrics_of(record, "seeds")[algorithm]
    rate = (block.get("1") or {}).get("flops_per_s")
    machine = metrics_of(record, "machine").get("flops_per_s")
    cells = []
    for S in counts:
        case = block.get(S)
        cells += (
            ["—", "—"]
            if case is None
            else [num(case["seed_samples_per_s"], ",.0f"), num(case["gain"], ".2f")]
        )
    head = [record.cell, record.backend, record.device, record.dtype]
    gflops = [num(v / 1e9 if v else None, ".1f") for v in (rate, machine)]
    fixed, one = block.get("fixed_seconds"), (block.get("1") or {}).get("step_seconds")
    share = num(100 * fixed / one if fixed is not None and one else None, ".0f")
    limit = num(block.get("gain_limit"), ".2f")
    return [*head, LABELS.get(algorithm, algorithm), *cells, share, limit, *gflops]


def _counts(records: Iterable[Record]) -> list[str]:
    found = {
        S
        for r in records
        for block in metrics_of(r, "seeds").values()
        for S in block
        if S.isdigit()
    }
    return sorted(found, key=int)


def seed_speed_table(records: Iterable[AnyRecord]) -> str:
    """One row per record and algorithm: seed-samples/s and gain over S = 1 for each S."""
    ok = [r for r in records_in(records) if r.status == "ok"]
    ok = showable(ok, lambda r: [_row(r, a, _counts([r])) for a in metrics_of(r, "seeds")])
    counts = _counts(ok)
    rows = [_row(r, a, counts) for r in ok for a in metrics_of(r, "seeds")]
    headers = ["cell", "backend", "device", "dtype", "algorithm"]
    for S in counts:
        headers += [f"S={S} img/s", f"S={S} gain"]
    headers += ["fixed % of S=1 step", "gain limit", "S=1 GFLOP/s", "GEMM GFLOP/s"]
    return tabulate(rows, headers=headers, tablefmt="github")


def format_seed_speed(record: AnyRecord) -> str:
    """Heading and `seed_speed_table` of one record (or its heading and reason), and why seeds
    were not batched where they were not."""
    r = records_in([record])[0]
    head = heading(r, device=True, seed=False, measurement=True)
    if r.status != "ok":
        return f"{head}: {r.reason}"
    note = f"\n{r.reason}" if r.reason else ""
    return f"{head}\n{seed_speed_table([r])}{note}"
