"""One exception family. Every message is one line: what was expected, what was found, and where.

The CLI turns any `EpbenchError` into that line on stderr and exit code 2, without a traceback.
"""

from __future__ import annotations


class EpbenchError(Exception):
    """Base class of every error epbench raises on purpose."""


class UnknownNameError(EpbenchError, KeyError):
    """A backend, task, variant, preset or parameter name that is not known."""

    def __init__(self, kind: str, name: str, known: list[str] | tuple[str, ...]) -> None:
        listing = ", ".join(sorted(known)) if known else "none"
        super().__init__(f"unknown {kind} {name!r}; known: {listing}")

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class TaskError(EpbenchError, ValueError):
    """An invalid task file or override: says which field, what was expected, what was found."""

    def __init__(self, where: str, field: str, expected: str, found: object) -> None:
        super().__init__(f"{where}: {field}: expected {expected}, found {found!r}")


class DataError(EpbenchError, ValueError):
    """A malformed, truncated, corrupted or missing dataset file."""


class BackendError(EpbenchError, RuntimeError):
    """A backend that cannot run what was asked (missing framework, device, unsupported model)."""


class ResultsError(EpbenchError, ValueError):
    """A results file that cannot be read as epbench records."""
