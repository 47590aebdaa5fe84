"""The process's own memory, read from Linux's /proc ("peak memory" of docs/theory.md §6.2, on the
CPU).

Used by the `train`, `speed`, `memory` and `rtrl` measurements: `reset_peak_memory` before the
measured work, `peak_memory_bytes` after it; `rss_bytes` for the current resident set and `trim`
to hand freed heap back to the OS before a baseline is read. Elsewhere than Linux the reset and
trim are no-ops and the peak is `getrusage`'s (since the process started).
"""

from __future__ import annotations

import ctypes
import gc
import resource
import sys


def _status_field(name: str) -> int | None:
    """A `kB` field of /proc/self/status in bytes (None where /proc is missing)."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(name + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def reset_peak_memory() -> None:
    """Reset the process's peak resident set size (Linux `clear_refs` 5); a no-op elsewhere."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        pass


def peak_memory_bytes() -> int:
    """Peak resident set size of this process since the last reset (`VmHWM`), else since start."""
    peak = _status_field("VmHWM")
    if peak is not None:
        return peak
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def rss_bytes() -> int:
    """The current resident set size (VmRSS), 0 where /proc is missing."""
    return _status_field("VmRSS") or 0


def trim() -> None:
    """Hand freed heap memory back to the OS (glibc `malloc_trim`; a no-op elsewhere)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
