"""The `profile` measurement: where a training step's time goes (`epbench profile`).

What comes in: a resolved `Cell` whose arguments name the algorithm (`ep`, `ep_symmetric`, `bptt`
or `all`) and the number of steps, its backend and mini-batch. What goes out: per algorithm, the
seconds per step under cProfile, the top functions by own time, the backend's own profiler
summary where it has one (`ProfilerBackend`, optional), and the files written under
`<records folder>/profiles/` (paths relative to the records' folder).
"""

from __future__ import annotations

import cProfile
import io
import pstats
import time
from pathlib import Path
from typing import Any

import numpy as np

from epbench.core.flops import ALGORITHMS
from epbench.core.measurement import Cell, Output
from epbench.core.params import init_params
from epbench.core.paths import file_part, output_path
from epbench.core.protocols import Backend, ProfilerBackend
from epbench.core.spec import TaskSpec
from epbench.measurements.speed import run_steps, step_function

DEFAULT_STEPS = 5


def profile_algorithm(
    spec: TaskSpec,
    backend: Backend,
    batch: tuple,
    *,
    algorithm: str,
    steps: int,
    dtype: str,
    device: str,
    seed: int,
    folder: Path,
    rows: int = 30,
) -> dict[str, Any]:
    """Where the time of `steps` training steps of `algorithm` goes: they run (after one warm-up
    step) under cProfile — `folder`/<stem>.prof and the top `rows` functions by own time in
    <stem>.txt — then once more under the backend's own profiler when it offers the optional
    `profile_summary` (torch: per-op table; jax: a trace), written to the folder <stem>/.
    Returns the paths, the seconds per step and both summaries."""
    x, y = (np.asarray(a, dtype=dtype) for a in batch)
    net = backend.build(spec.model, dtype=dtype, device=device)
    step = step_function(net, spec, x, y, algorithm=algorithm)
    params, _, _ = step(net.load(init_params(spec.model, seed=seed, dtype=dtype)))
    net.synchronize()
    folder.mkdir(parents=True, exist_ok=True)
    stem = file_part(f"{spec.cell}_{backend.name}_{device}_{algorithm}")
    prof, txt = output_path(folder, f"{stem}.prof"), output_path(folder, f"{stem}.txt")
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    params, _ = run_steps(net, step, params, steps)
    profiler.disable()
    seconds = (time.perf_counter() - start) / steps
    profiler.dump_stats(prof)
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(rows)
    txt.write_text(text.getvalue(), encoding="utf-8")
    summary = None
    if isinstance(backend, ProfilerBackend):
        summary = backend.profile_summary(
            lambda: run_steps(net, step, params, steps),
            device=device,
            folder=output_path(folder, stem),
        )
    return {
        "cprofile": str(prof),
        "cprofile_text": str(txt),
        "cprofile_summary": text.getvalue(),
        "backend_summary": summary,
        "seconds_per_step": seconds,
    }


def run(cell: Cell, backend: Backend, batch: tuple, output: Output) -> dict[str, Any]:
    """Profile the cell's algorithms (module doc): the record's fields."""
    algorithm = cell.argument("algorithm", "all")
    algorithms = ALGORITHMS if algorithm == "all" else (algorithm,)
    folder = output_path(output.folder, "profiles")
    results = {}
    for name in algorithms:
        out = profile_algorithm(
            cell.spec,
            backend,
            batch,
            algorithm=name,
            steps=cell.argument("steps", DEFAULT_STEPS),
            dtype=cell.dtype,
            device=cell.device,
            seed=cell.seed,
            folder=folder,
        )
        for key in ("cprofile", "cprofile_text"):
            out[key] = str(Path(out[key]).relative_to(output.folder))
        results[name] = out
    return {"metrics": {"profile": results}}
