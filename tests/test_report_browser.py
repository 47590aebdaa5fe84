"""The report page in a real browser: headless Chromium (Debian's `chromium` package, installed
by .ci/run where apt-get is available) opens the report of real records after its folder was
moved, and every image must load, every internal link resolve, every file link stay inside the
folder, the console stay free of errors, and the tables sort when a heading is clicked."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from epbench.cli import main

SUPPORT = Path(__file__).parent / "support"


def load(name: str) -> object:
    """tests/support/NAME.py as the module `epbench_test_NAME` (loaded once)."""
    module_name = f"epbench_test_{name}"
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, SUPPORT / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    return sys.modules[module_name]


browser = load("browser")
if browser.find_chromium() is None:
    pytest.skip(
        "no chromium binary (Debian: apt-get install chromium; .ci/run installs it where "
        "apt-get is available)",
        allow_module_level=True,
    )
pytest.importorskip("websocket", reason="websocket-client drives Chromium (requirements-test)")


@pytest.fixture(scope="module")
def moved_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The report of real records (saved traces included), written, then its folder moved."""
    folder = tmp_path_factory.mktemp("browser")
    results = folder / "results"
    shutil.copytree(load("real_records").shared_results(tmp_path_factory), results)
    argv = ["run", "toy", "--preset", "quick", "--backend", "torch", "--save-traces"]
    assert main([*argv, "--executor", "inline", "--quiet", "--out", str(results)]) == 0
    assert main(["report", str(results), "--out", str(folder / "written")]) == 0
    shutil.move(folder / "written", folder / "moved")
    return folder / "moved" / "report.html"


def test_every_image_loads_every_link_resolves_no_console_error(moved_report: Path) -> None:
    with browser.open_page(moved_report) as page:
        found = page.evaluate(browser.CHECK_PAGE)
        errors = page.errors()
    assert errors == []
    assert found["broken"] == [] and found["dangling"] == []
    assert found["links"] > 10 and found["tables"] > 3
    figures = list(moved_report.parent.glob("*.png"))
    assert found["images"] == len(re.findall(r"<img ", moved_report.read_text()))
    if importlib.util.find_spec("matplotlib") is not None:
        assert found["images"] >= 3 and figures
    for url in found["files"]:  # links to files stay inside the moved folder
        path = Path(unquote(urlparse(url).path))
        assert path.parent == moved_report.parent and path.is_file(), url


def test_tables_sort_when_a_heading_is_clicked(moved_report: Path) -> None:
    column = """(() => {
      const table = document.querySelector('h2#records + table');
      const index = Array.from(table.tHead.rows[0].cells).findIndex(c => c.textContent === '%s');
      return Array.from(table.tBodies[0].rows).map(r => r.cells[index].textContent);
    })()"""
    click = """document.querySelector('h2#records + table')
      .querySelectorAll('th')[%d].click()"""
    with browser.open_page(moved_report) as page:
        before = page.evaluate(column % "backend")
        page.evaluate(click % 3)  # backend
        ascending = page.evaluate(column % "backend")
        page.evaluate(click % 3)
        descending = page.evaluate(column % "backend")
        page.evaluate(click % 0)  # run: numbers, not text (10 after 9)
        runs = page.evaluate(column % "run")
        errors = page.errors()
    assert errors == []
    assert ascending == sorted(before) and descending == sorted(before, reverse=True)
    assert [int(r) for r in runs] == list(range(1, len(runs) + 1))


def test_the_page_is_self_contained(moved_report: Path) -> None:
    page = moved_report.read_text()
    refs = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert refs and not [r for r in refs if re.match(r"(/|[a-z]+:)", r) and r != "data:,"]
    assert json.dumps(str(moved_report.parent.parent)) not in page
