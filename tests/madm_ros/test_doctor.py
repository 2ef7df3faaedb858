import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.ros


def run_doctor(*args, **env):
    return subprocess.run([sys.executable, "-m", "madm_ros.doctor", *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, **env})


def test_doctor_passes_here(ros_domain):
    result = run_doctor()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "middleware   ok" in result.stdout and "interfaces   ok" in result.stdout
    assert "Environment ready" in result.stdout


def test_demo_arguments_need_demo(ros_domain):
    result = run_doctor("--out", "x")
    assert result.returncode == 2 and "unrecognized arguments: --out x" in result.stderr


def test_doctor_reports_a_broken_middleware_with_its_fix(ros_domain):
    result = run_doctor(RMW_IMPLEMENTATION="rmw_does_not_exist_cpp")
    # rcl ends the process at import for an unknown RMW; the report survives and names it.
    assert result.returncode == 1
    assert "rclpy        FAIL     process ended:" in result.stdout
    assert "rmw_does_not_exist_cpp" in result.stdout
    assert "madm cannot run here: rclpy failed" in result.stderr
