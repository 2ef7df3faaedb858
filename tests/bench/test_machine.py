"""bench/machine.py: the machine record every bench script writes, and who counts as other load."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from bench.machine import LoadWatch, heavy_processes, machine_info

SLEEPER = "import time; time.sleep(30)  # pytest-like"  # a command line heavy_processes() calls heavy


def test_the_record_has_the_hardware_the_versions_asked_for_the_load_and_the_scripts_own_settings():
    watch = LoadWatch()
    info = machine_info(("not_a_module_here",), watch, threads=2)
    assert info["cpus"] >= info["cpus_usable"] >= 1 and info["cpu_model"] and info["memory_gib"] > 0
    assert info["versions"]["numpy"] and info["versions"]["not_a_module_here"] is None
    assert set(info["load"]) >= {"other_processes_cores_mean", "load_average_before", "load_average_after",
                                 "heavy_processes_before", "heavy_processes_after", "contended"}
    assert isinstance(info["load"]["contended"], bool) and info["threads"] == 2
    assert set(machine_info()["load"]) == {"load_average", "heavy_processes"}  # no watch: a snapshot


def test_the_benchmarks_own_children_are_not_other_load_but_an_unrelated_job_is():
    child = subprocess.Popen([sys.executable, "-c", SLEEPER])
    # an orphan (its shell has exited): no longer this process's descendant, so it competes like any other job
    shell = subprocess.run(["sh", "-c", f'"{sys.executable}" -c "{SLEEPER}" >/dev/null 2>&1 & echo $!'],
                           capture_output=True, text=True, check=True)
    orphan = int(shell.stdout.strip())
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(line.startswith(f"{orphan} ") for line in heavy_processes()):
            time.sleep(0.1)
        pids = {int(line.split()[0]) for line in heavy_processes()}
        assert orphan in pids and child.pid not in pids and os.getpid() not in pids
    finally:
        child.kill()
        child.wait()
        os.kill(orphan, signal.SIGKILL)
