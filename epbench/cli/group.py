"""The `epbench` click group: the built-in commands, the plugins' commands, one-line errors.

`make_cli()` builds a fresh group. A plugin adds commands through the hook
`epbench_register_commands(cli)` (`@cli.command()` or `cli.add_command(...)`), called on the
plugin manager of the invocation's registry (`epbench.cli.options.registry_of`) the first time a
command name is not a built-in one or the commands are listed (`--help`): `epbench table` loads
no backend. A plugin may not replace a built-in command.

Errors, in every way the group is run (`main`, the `epbench` script, `click.testing.CliRunner`):
an `EpbenchError` or a usage error (an unknown option, a value out of range) prints ONE line
`epbench: error: …` on stderr and exits with 2, records already written are kept; Ctrl-C exits
with 130. Otherwise the exit code is the command's return value (0 when it returns None).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import click

from epbench.cli import figures, inspect, query, run, tables
from epbench.cli.options import registry_of
from epbench.core.errors import EpbenchError

BUILTIN_COMMANDS: tuple[click.Command, ...] = (
    inspect.backends,
    inspect.tasks,
    inspect.plugins,
    run.run,
    run.parity,
    run.profile,
    tables.table,
    tables.compare,
    figures.plot,
    figures.report,
    query.query,
    query.export,
)
INTERRUPTED = 130
# click ≥ 8.2 raises this usage error (exit 2, the help on stderr) for a bare `epbench`
NO_COMMAND: type[Exception] | tuple[()] = getattr(click.exceptions, "NoArgsIsHelpError", ())


def usage_line(err: click.UsageError) -> str:
    """A usage error as one line: `epbench: error: --jobs: expected an integer ≥ 1, found 0
    (epbench run --help)`."""
    if isinstance(err, click.BadParameter) and not isinstance(err, click.MissingParameter):
        param, hint = err.param, err.param_hint
        if hint is None and param is not None:
            hint = param.opts[0] if isinstance(param, click.Option) else param.human_readable_name
        hint = hint if isinstance(hint, str) else " / ".join(hint or ["value"])
        message = f"{hint}: {err.message}"
    else:
        message = err.format_message()
    message = " ".join(message.split())
    if err.ctx is not None:
        message += f" ({err.ctx.command_path} --help)"
    return f"epbench: error: {message}"


class EpbenchGroup(click.Group):
    """The `epbench` group (module doc): plugin commands loaded on demand, one-line errors."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._plugin_commands_added = False

    def add_plugin_commands(self, ctx: click.Context) -> None:
        """Call `epbench_register_commands(cli=self)` once; an EpbenchError when a plugin
        replaced a built-in command."""
        if self._plugin_commands_added:
            return
        self._plugin_commands_added = True
        builtin = dict(self.commands)
        registry_of(ctx).pm.hook.epbench_register_commands(cli=self)
        replaced = sorted(name for name, cmd in builtin.items() if self.commands[name] is not cmd)
        if replaced:
            self.commands.update(builtin)
            raise EpbenchError(
                f"a plugin registered the command {replaced[0]!r}: expected a new name, "
                "found a built-in command's"
            )

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """The command `cmd_name`: a built-in one, else one a plugin adds (or None)."""
        command = super().get_command(ctx, cmd_name)
        if command is None and not self._plugin_commands_added:
            self.add_plugin_commands(ctx)
            command = super().get_command(ctx, cmd_name)
        return command

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Every command name, the plugins' included."""
        self.add_plugin_commands(ctx)
        return super().list_commands(ctx)

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> int:
        """Run the group on `args` (default: sys.argv[1:]); returns the exit code, or exits
        with it when `standalone_mode` (module doc: the exit codes and error lines)."""
        code = self._run(args, prog_name or "epbench", complete_var, extra)
        if standalone_mode:
            sys.exit(code)
        return code

    def _run(
        self,
        args: Sequence[str] | None,
        prog_name: str,
        complete_var: str | None,
        extra: dict[str, Any],
    ) -> int:
        """click's own `main` (not standalone), its errors turned into exit codes and lines."""
        try:
            code = super().main(
                None if args is None else list(args),
                prog_name,
                complete_var,
                standalone_mode=False,
                **extra,
            )
        except NO_COMMAND as err:
            err.show()  # type: ignore[attr-defined]
            return 2
        except click.UsageError as err:
            click.echo(usage_line(err), err=True)
            return 2
        except click.ClickException as err:
            click.echo(f"epbench: error: {' '.join(err.format_message().split())}", err=True)
            return err.exit_code
        except EpbenchError as err:
            click.echo(f"epbench: error: {err}", err=True)
            return 2
        except click.Abort:
            click.echo("epbench: interrupted; records written so far are kept", err=True)
            return INTERRUPTED
        return code if isinstance(code, int) else 0


def make_cli() -> EpbenchGroup:
    """A fresh `epbench` group with the built-in commands (the plugins' are added on demand)."""
    group = EpbenchGroup(
        name="epbench",
        help="Benchmark Equilibrium Propagation against BPTT on convergent RNNs.",
        context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    )
    for command in BUILTIN_COMMANDS:
        group.add_command(command)
    return group


def main(argv: Sequence[str] | None = None) -> int:
    """`epbench ARGV…` (default: sys.argv[1:]) on a fresh group (`make_cli`, so plugins load
    anew each call); returns the exit code: the command's (0, or 1 for failed cells, a
    regression, a parity difference), 2 for bad input, 130 when interrupted."""
    return make_cli().main(argv, prog_name="epbench", standalone_mode=False)
