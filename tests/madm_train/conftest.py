"""Fixtures of the training tests: one tiny random Stable Diffusion folder (the real diffusers classes) per session."""

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from madm_train.models.tiny_sd import build_tiny_sd

    return build_tiny_sd(tmp_path_factory.mktemp("tiny") / "sd", seed=0)
