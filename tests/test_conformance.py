"""Every installed backend passes the conformance suite against the golden float64 traces, and
the shipped golden files are what `scripts/make_golden.py` writes.

The suite itself is `epbench.plugins.conformance`; tests/test_conformance_broken.py shows that it
fails deliberately broken backends.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from epbench.plugins import golden
from epbench.plugins.conformance import check_backend, compare_arrays
from epbench.plugins.registry import Registry

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "make_golden.py"


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_backend_matches_the_golden_traces(backend_name: str, dtype: str) -> None:
    report = check_backend(Registry().get_backend(backend_name), dtype=dtype, device="cpu")
    assert report.ok, str(report)
    assert not report.skipped, report.skipped  # the shipped backends run every case


def test_golden_files_are_small_package_data() -> None:
    files = golden.case_files()
    assert files and all(path.parent.name == "golden" for path in files)
    assert sum(path.stat().st_size for path in files) < 2 * 2**20
    cases = golden.load_all()  # allow_pickle=False
    assert {"toy", "EB-1h-tanh", "P-2h-hardsigm", "P-conv-hardsigm", "P-2h-asymmetric"} <= set(
        cases
    )
    for case in cases.values():
        assert case.x.shape[0] >= 3, case.spec.name  # batch conventions matter
        assert set(case.groups["params"]) == set(case.groups["bptt_step"]), case.spec.name
        if case.spec.model.setting == "EB":  # ρ(x) ≠ x for every activation
            assert case.x.min() < 0 and case.x.max() > 1, case.spec.name


def test_spec_json_round_trips() -> None:
    for case in golden.load_all().values():
        assert golden.spec_from_json(golden.spec_to_json(case.spec)) == case.spec


def _generator():
    spec = importlib.util.spec_from_file_location("make_golden", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generator_reproduces_the_shipped_files(tmp_path: Path) -> None:
    """Regenerate every case into a temporary folder; the specs must be equal and every array
    equal to 1e-9 (float64 rounding may differ between machines, nothing else may)."""
    pytest.importorskip("epbench_torch")
    _generator().write(tmp_path)
    shipped, fresh = golden.load_all(), golden.load_all(tmp_path)
    assert sorted(fresh) == sorted(shipped)
    for name, case in shipped.items():
        new = fresh[name]
        assert new.spec == case.spec, name
        assert np.array_equal(new.x, case.x) and np.array_equal(new.y, case.y), name
        assert sorted(new.groups) == sorted(case.groups), name
        for group, arrays in case.groups.items():
            assert not compare_arrays(group, new.groups[group], arrays, lambda _: 1e-9), name
        for key, value in case.scalars.items():
            assert new.scalars[key] == pytest.approx(value, rel=1e-6, abs=1e-12), (name, key)
