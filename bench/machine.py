"""The machine facts every benchmark result carries: hardware, software, and how busy the machine was meanwhile.

Why one helper: a timing means little without the CPU, core count, memory and library versions
behind it, and nothing when other jobs shared the CPU; every bench script records the same facts
under the same keys (``machine`` in its JSON), so results from different scripts and days compare.

Contention is measured, not guessed from the load average (which counts the benchmark itself):
:class:`LoadWatch` takes the CPU time the whole machine spent busy (``/proc/stat``) minus what this
process and its waited-for children used, per second of wall time; above 0.1 cores, or with a
training run or test suite running beside it, the result is ``contended`` and its timings inflated.

    watch = LoadWatch()
    ...                                                       # the measurement
    result["machine"] = machine_info(("numpy", "onnxruntime"), watch, threads=2)
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import os
import platform
import re
import resource
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["CONTENDED_CORES", "LoadWatch", "cpu_model", "heavy_processes", "machine_busy_s", "machine_info", "own_cpu_s"]

HEAVY = re.compile(r"madm_train|pytest")  # training runs and test suites: the jobs that share this project's machines
CONTENDED_CORES = 0.1  # other processes' mean CPU use above which timings count as contended


def machine_info(libraries: Iterable[str] = (), watch: LoadWatch | None = None, **settings: Any) -> dict[str, Any]:
    """CPU, cores, memory, platform, versions of ``libraries`` (numpy always), and the load.

    ``load`` is ``watch``'s record of the run (other processes' CPU, load averages, heavy jobs,
    ``contended``) when given, else a snapshot now. ``settings`` are the script's own facts about
    how it used the machine (threads, pinned CPU), recorded beside the rest.
    """
    info: dict[str, Any] = {
        "cpu_model": cpu_model(), "cpus": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)),
        **memory_gib(), "platform": platform.platform(), "python": platform.python_version(),
        "versions": versions(("numpy", *libraries)),
    }
    if "torch" in info["versions"] and info["versions"]["torch"]:
        import torch

        info["gpu"] = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    info["load"] = watch.result() if watch is not None else {
        "load_average": [round(v, 2) for v in os.getloadavg()], "heavy_processes": heavy_processes()}
    return info | settings


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; the architecture where it names none, as on many ARM boards)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def memory_gib() -> dict[str, float | None]:
    """Total and available memory in GiB (``/proc/meminfo``)."""
    values: dict[str, float] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            name, _, rest = line.partition(":")
            if name in ("MemTotal", "MemAvailable"):
                values[name] = round(int(rest.split()[0]) / 2**20, 1)  # kB
    return {"memory_gib": values.get("MemTotal"), "memory_available_gib": values.get("MemAvailable")}


def versions(libraries: Iterable[str]) -> dict[str, str | None]:
    """Module name → version (``None`` where not installed)."""
    out: dict[str, str | None] = {}
    for name in dict.fromkeys(libraries):
        try:
            out[name] = str(importlib.import_module(name).__version__)
        except Exception:  # not installed, or a module without __version__
            try:
                out[name] = importlib.metadata.version(name)
            except importlib.metadata.PackageNotFoundError:
                out[name] = None
    return out


def machine_busy_s() -> float:
    """CPU seconds the whole machine spent busy since boot (all cores, ``/proc/stat``)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def own_cpu_s(children: bool = True) -> float:
    """CPU seconds of this process, plus its finished (waited-for) children unless ``children`` is false."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN) if children else (resource.RUSAGE_SELF,):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def heavy_processes() -> list[str]:
    """Command lines of other heavy jobs (training runs, test suites) running now.

    This process's ancestors (a test running the script) and descendants (its node or row
    processes) are part of the benchmark, not competitors, and are left out.
    """
    parents: dict[int, int] = {}
    commands: dict[int, str] = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            command = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
        commands[int(entry)] = command

    def chain(pid: int) -> list[int]:
        out = []
        while pid > 1 and pid not in out:
            out.append(pid)
            pid = parents.get(pid, 0)
        return out

    own = os.getpid()
    ancestors = set(chain(own))
    return [f"{pid} {command[:160]}" for pid, command in sorted(commands.items())
            if HEAVY.search(command) and pid not in ancestors and own not in chain(pid)]


class LoadWatch:
    """Other processes' CPU use, load averages and heavy jobs from construction to :meth:`result`."""

    def __init__(self) -> None:
        self.heavy_before = heavy_processes()
        self.load_before = os.getloadavg()
        self.busy0, self.own0, self.wall0 = machine_busy_s(), own_cpu_s(), time.perf_counter()

    def result(self) -> dict[str, Any]:
        """The record of the run so far; ``contended``: timings from it are inflated by other work."""
        wall = time.perf_counter() - self.wall0
        others = max(0.0, (machine_busy_s() - self.busy0) - (own_cpu_s() - self.own0)) / max(wall, 1e-9)
        heavy_after = heavy_processes()
        return {"other_processes_cores_mean": round(others, 3),
                "load_average_before": [round(v, 2) for v in self.load_before],
                "load_average_after": [round(v, 2) for v in os.getloadavg()],
                "heavy_processes_before": self.heavy_before, "heavy_processes_after": heavy_after,
                "wall_s": round(wall, 1), "contended": others > CONTENDED_CORES or bool(self.heavy_before or heavy_after)}
