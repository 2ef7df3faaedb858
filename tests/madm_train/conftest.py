"""Fixtures of the training tests: one tiny random Stable Diffusion folder (the real diffusers classes) and one
synthetic RGB + events scene folder per session."""

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from madm_train.models.tiny_sd import build_tiny_sd

    return build_tiny_sd(tmp_path_factory.mktemp("tiny") / "sd", seed=0)


@pytest.fixture(scope="session")
def synth_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """30 synthetic 64×128 frames (RGB and events, DSEC-11 labels) in the folder layout."""
    from madm_ros.synthetic import SynthConfig, generate

    folder = tmp_path_factory.mktemp("synth")
    generate(SynthConfig(frames=30, height=64, width=128, seed=3, frames_per_sequence=10, modalities=("rgb", "events")),
             folder)
    return folder
