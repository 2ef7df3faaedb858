"""Linters as tests, as ROS 2 packages run flake8/pep257: every finding is printed on failure."""

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_ruff_finds_nothing():
    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff not installed (scripts/in-env provides it)")
    result = subprocess.run([ruff, "check", "madm_ros", "madm_train", "tests", "bench"], cwd=REPO,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
