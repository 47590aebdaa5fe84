"""Analyse epbench records with pandas: how many records, the GDU cosine per cell and backend,
EP's test error against BPTT's per model, and the speed ratio per backend.

    python examples/analysis/ep_vs_bptt.py results            # a results folder (or files)
    python examples/analysis/ep_vs_bptt.py results --parquet records.parquet

`epbench.records(paths)` gives one row per record with flat columns (cell, backend, dtype, seed,
status, commit, started, the named metrics such as `cosine`, `ep_test`, `bptt_test`,
`ep_minus_bptt`, and `speed_<algorithm>_step_seconds`); the full record is the JSON text in
`record`. The same table is the `records` view of `epbench query` and what `epbench export`
writes.
"""

from __future__ import annotations

import argparse
import json

import pandas as pd

import epbench


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", help="result files or folders")
    parser.add_argument("--parquet", help="also write the records to this Parquet file")
    args = parser.parse_args()

    df = epbench.records(args.results)
    backends = sorted(df.backend.dropna().unique())
    print(f"{len(df)} records, {df['cell'].nunique()} cells, backends {backends}")
    ok = df[df.status == "ok"]

    gdu = ok[ok.measurement == "gdu"]
    if len(gdu):
        print("\nGDU: smallest cosine of EP against BPTT (docs/theory.md §4)")
        print(gdu.pivot_table(index="cell", columns="backend", values="cosine", aggfunc="min"))

    train = ok[ok.measurement == "train"]
    if len(train):
        print("\nTraining: test error % of the last epoch, mean over seeds")
        summary = train.groupby(["cell", "backend"])[["ep_test", "bptt_test", "ep_minus_bptt"]]
        print(summary.agg(["mean", "count"]).round(2))

    speed = ok[ok.measurement == "speed"]
    if len(speed):
        ratio = speed.speed_ep_step_seconds / speed.speed_bptt_step_seconds
        print("\nSpeed: EP step time over BPTT's, median per backend (measured in the same run)")
        print(ratio.groupby(speed.backend).median().round(3))

    # Anything else is in the record's JSON: here the framework versions of each backend.
    versions = df.record.map(lambda text: json.loads(text)["environment"].get("backend_versions"))
    print("\nFramework versions:", pd.Series(versions.map(json.dumps)).unique().tolist())

    if args.parquet:
        df.to_parquet(args.parquet)
        print(f"\nwrote {args.parquet}")


if __name__ == "__main__":
    main()
