"""This process's memory, on Linux and macOS alike: what a worker reports as the inference's peak working set.

- **RSS** comes from psutil (``/proc`` on Linux, ``task_info`` on macOS).
- **Peak**: on Linux the kernel's high-water mark (``VmHWM``), which :func:`reset_peak` restarts at the current RSS
  after the model is loaded, so the peak covers inference only. Not ``ru_maxrss`` there: it survives fork + exec,
  so a worker would report its parent's peak. macOS has no way to reset a high-water mark: the peak is
  ``ru_maxrss`` (bytes there, KiB on Linux) since the process started, load included, so the inference peak derived
  from it is an upper bound.
"""

from __future__ import annotations

import resource
import sys

import psutil


def is_linux() -> bool:
    return sys.platform.startswith("linux")


def rss_mb() -> float:
    """Resident set size of this process, MiB."""
    return psutil.Process().memory_info().rss / 2**20


def reset_peak() -> bool:
    """Restart the RSS high-water mark at the current RSS (Linux ≥ 4.0); ``False`` where the OS cannot."""
    if not is_linux():
        return False
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        return False
    return True


def peak_mb() -> float:
    """Peak RSS of this process, MiB: since :func:`reset_peak` on Linux, since the process started elsewhere."""
    if is_linux():
        try:
            with open("/proc/self/status") as handle:
                for line in handle:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024
