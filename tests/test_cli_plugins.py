"""The click command line itself (epbench.cli): plugin commands through the
`epbench_register_commands` hook, `epbench plugins`, one-line usage errors and range checks.

Nothing here runs a cell: every case stops at parsing, or runs a command that only lists."""

from __future__ import annotations

import json
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

import epbench
from epbench.cli import cli, main, make_cli
from epbench.plugins.manager import BUILTIN_PLUGINS, make_plugin_manager
from epbench.plugins.registry import Registry


class HelloPlugin:
    """A plugin that adds `epbench hello [--name N]` (exit 3 with --fail)."""

    @epbench.hookimpl
    def epbench_register_commands(self, cli: click.Group) -> None:
        @cli.command()
        @click.option("--name", default="world")
        @click.option("--fail", is_flag=True)
        def hello(name: str, fail: bool) -> int:
            """Say hello."""
            click.echo(f"hello {name}")
            return 3 if fail else 0


class ImpostorPlugin:
    """A plugin that tries to replace the built-in `run`."""

    @epbench.hookimpl
    def epbench_register_commands(self, cli: click.Group) -> None:
        @cli.command(name="run")
        def impostor() -> None:
            click.echo("not the real run")


class StopPlugin:
    """A plugin whose command is interrupted (Ctrl-C)."""

    @epbench.hookimpl
    def epbench_register_commands(self, cli: click.Group) -> None:
        @cli.command()
        def stop() -> None:
            raise KeyboardInterrupt


def registry(*plugins: object) -> Registry:
    """The built-in plugins and `plugins`, no installed entry points."""
    return Registry(make_plugin_manager(load_entry_points=False, plugins=plugins))


def one_line(stderr: str, *fragments: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("epbench: error: "), stderr
    assert "Traceback" not in stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def test_a_plugin_command_is_listed_and_runs_with_its_exit_code() -> None:
    runner = CliRunner()
    group = make_cli()
    listed = runner.invoke(group, ["--help"], obj=registry(HelloPlugin()))
    assert listed.exit_code == 0 and "hello" in listed.output and "Say hello." in listed.output
    done = runner.invoke(make_cli(), ["hello", "--name", "EP"], obj=registry(HelloPlugin()))
    assert done.exit_code == 0 and done.output == "hello EP\n"
    failed = runner.invoke(make_cli(), ["hello", "--fail"], obj=registry(HelloPlugin()))
    assert failed.exit_code == 3
    assert make_cli().main(["hello"], obj=registry(HelloPlugin()), standalone_mode=False) == 0


def test_plugin_commands_come_from_the_registrys_plugin_manager() -> None:
    runner = CliRunner()
    missing = runner.invoke(make_cli(), ["hello"], obj=registry())
    assert missing.exit_code == 2
    one_line(missing.stderr, "No such command 'hello'")
    assert "hello" not in cli.commands  # the module's group is left as it was


def test_a_plugin_may_not_replace_a_builtin_command() -> None:
    result = CliRunner().invoke(make_cli(), ["nosuch"], obj=registry(ImpostorPlugin()))
    assert result.exit_code == 2
    one_line(result.stderr, "'run'", "built-in")


def test_an_interrupted_command_exits_130_and_says_the_records_are_kept() -> None:
    result = CliRunner().invoke(make_cli(), ["stop"], obj=registry(StopPlugin()))
    assert result.exit_code == 130
    assert result.stderr.strip() == "epbench: interrupted; records written so far are kept"


def test_plugins_lists_the_builtins_and_their_hooks(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("EPBENCH_LOAD_PLUGINS", "")  # built-ins only
    assert main(["plugins", "--json"]) == 0
    found = {entry["name"]: entry for entry in json.loads(capsys.readouterr().out)}
    assert set(BUILTIN_PLUGINS) <= set(found)
    assert found["epbench.config.builtin_tasks"]["hooks"] == ["epbench_register_tasks"]
    assert found["epbench.measurements.builtin"]["hooks"] == ["epbench_register_measurements"]
    assert main(["plugins"]) == 0
    table = capsys.readouterr().out
    assert "| plugin" in table and "hooks" in table
    for name in BUILTIN_PLUGINS:
        assert name in table
    assert "epbench_register_tasks" in table and "epbench_register_measurements" in table


def test_plugins_shows_a_plugin_command_hook() -> None:
    result = CliRunner().invoke(make_cli(), ["plugins"], obj=registry(HelloPlugin()))
    assert result.exit_code == 0
    (row,) = [line for line in result.output.splitlines() if "epbench_register_commands" in line]
    assert "test_cli_plugins" in row


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["run", "toy", "--repeat", "-1"], ["--repeat: expected an integer ≥ 0, found -1"]),
        (["run", "toy", "--jobs", "0"], ["--jobs: expected an integer ≥ 1, found 0"]),
        (["run", "toy", "--retries", "-2"], ["--retries: expected an integer ≥ 0, found -2"]),
        (["run", "toy", "--seed", "-1"], ["--seed: expected an integer ≥ 0, found -1"]),
        (["run", "toy", "--seeds", "0,0"], ["--seeds: expected distinct non-negative"]),
        (["profile", "toy", "--steps", "0"], ["--steps: expected an integer ≥ 1, found 0"]),
        (["run", "toy", "--dtype", "float16"], ["--dtype: expected one of float32, float64"]),
        (["run", "toy", "--device", "tpu"], ["--device: expected one of cpu, cuda"]),
        (["run", "toy", "--executor", "slurm"], ["--executor: expected one of local, dask"]),
        (["plot", "r", "--format", "gif"], ["--format: expected one of png, svg, pdf"]),
        (["compare", "a", "b", "--threshold", "0"], ["--threshold: expected a finite number > 0"]),
        (["compare", "a", "b", "--threshold", "inf"], ["--threshold: expected a finite", "inf"]),
        (["parity", "toy", "--tolerance", "-1"], ["--tolerance: expected a finite number > 0"]),
        (["run", "toy", "--no-such-option"], ["--no-such-option", "epbench run --help"]),
        (["run"], ["TASK", "epbench run --help"]),
        (["report", "results"], ["--out"]),
        (["nosuch"], ["No such command 'nosuch'"]),
    ],
)
def test_usage_errors_are_one_line_with_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, args, fragments
) -> None:
    monkeypatch.setenv("EPBENCH_LOAD_PLUGINS", "")
    assert main(args) == 2
    captured = capsys.readouterr()
    one_line(captured.err, *fragments)
    assert captured.out == ""


def test_usage_error_of_the_real_command_line() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "epbench", "run", "toy", "--repeat", "-1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    one_line(proc.stderr, "--repeat: expected an integer ≥ 0, found -1")


def test_commands_that_need_no_backend_load_none() -> None:
    """`epbench table` / `compare` do not import the backends (nor their frameworks)."""
    code = (
        "import sys\nfrom epbench.cli import main\n"
        "assert main(['compare', 'no/such/old', 'no/such/new']) == 2\n"
        "assert not {'epbench_torch', 'epbench_jax', 'torch', 'jax'} & set(sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    one_line(proc.stderr, "no/such/old")


def test_an_epbench_error_in_a_command_is_one_line_under_click_too() -> None:
    result = CliRunner().invoke(make_cli(), ["table", "no/such/results"], obj=registry())
    assert result.exit_code == 2
    one_line(result.stderr, "no/such/results")


def test_help_exits_0_and_no_command_shows_the_help_with_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("EPBENCH_LOAD_PLUGINS", "")
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("backends", "tasks", "plugins", "run", "parity", "profile", "table"):
        assert command in out
    assert main(["run", "--help"]) == 0
    assert "--data-dir" in capsys.readouterr().out
    assert main([]) == 2
    assert "Commands:" in capsys.readouterr().err
