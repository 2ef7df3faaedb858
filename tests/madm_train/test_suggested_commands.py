"""Every command line an error message suggests works when pasted: it parses, and its keys and values load."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from madm_ros.errors import ConfigError  # noqa: E402
from madm_ros.palettes import get_label_set  # noqa: E402
from madm_train.cli import _parser  # noqa: E402
from madm_train.config import check_data_paths, load_config  # noqa: E402
from madm_train.methods.base import BuildContext  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
YAML = REPO / "config/train/synthetic_event_tiny.yaml"
SUGGESTION = re.compile(r"--set \S+=\S+(?: --set \S+=\S+)*|--resume \S+")


def suggestions(message: str) -> list[str]:
    return [s.rstrip(";,.)") for s in SUGGESTION.findall(message)]


def _accelerator_on_missing_cuda(tmp_path: Path) -> None:
    from madm_train.training.trainer import make_accelerator

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA; the message is for machines without it")
    make_accelerator(load_config(YAML, ["run.device=cuda"]))


def _sd_preset_without_weights(tmp_path: Path) -> None:
    config = load_config(YAML, ["method.model.preset=sd", "data.crop_hw=[64, 64]"])
    config.method.build(BuildContext(config, get_label_set("dsec11"), tmp_path))


def _damaged_checkpoint(tmp_path: Path) -> None:
    from madm_train.training.checkpoints import validate_checkpoint

    for step in (2, 4):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        (folder / "state.json").write_text(json.dumps({"format": 2, "step": step, "files": []}))
    (tmp_path / "checkpoint-4" / "state.json").write_text("{")
    validate_checkpoint(tmp_path / "checkpoint-4")


def _init_weights_of_another_size(tmp_path: Path) -> None:
    from madm_train.models.tiny_sd import build_tiny_model, build_tiny_sd

    build_tiny_model(build_tiny_sd(tmp_path / "sd"), 11).save(tmp_path / "model")  # saved at input_size None
    config = load_config(YAML, [f"method.model.init_weights={tmp_path / 'model'}", "method.model.input_size=128"])
    config.method.build(BuildContext(config, get_label_set("dsec11"), tmp_path))


CASES: dict[str, Callable[[Path], None]] = {
    "no CUDA": _accelerator_on_missing_cuda,
    "fp16 on the CPU": lambda tmp_path: load_config(YAML, ["run.amp=true", "run.amp_dtype=float16"]),
    "FSDP on the CPU": lambda tmp_path: load_config(YAML, ["run.distributed=fsdp"]),
    "crop not a multiple of 64": lambda tmp_path: load_config(YAML, ["data.crop_hw=[96, 96]"]),
    "SD preset without weights": _sd_preset_without_weights,
    "missing data roots": lambda tmp_path: check_data_paths(load_config(YAML, [f"data.source_root={tmp_path}/a",
                                                                                f"data.target_root={tmp_path}/a"])),
    "damaged checkpoint": _damaged_checkpoint,
    "init weights of another input size": _init_weights_of_another_size,
}


@pytest.mark.parametrize("case", CASES)
def test_the_command_an_error_suggests_parses_and_loads(case: str, tmp_path: Path):
    with pytest.raises(ConfigError) as caught:
        CASES[case](tmp_path)
    found = suggestions(str(caught.value))
    assert found, f"the message suggests no command: {caught.value}"
    for snippet in found:
        args = _parser().parse_args(["adapt", "--config", str(YAML), *shlex.split(snippet)])
        overrides = [*args.overrides, *([f"run.resume={args.resume}"] if args.resume else [])]
        load_config(YAML, overrides)  # the suggested keys exist and their values have the right types


def test_the_pattern_finds_what_messages_write():
    assert suggestions("use --set run.device=cpu --set run.amp=false; or --resume checkpoint-2, or") == [
        "--set run.device=cpu --set run.amp=false", "--resume checkpoint-2"]


def test_several_values_after_one_set_parse_like_repeated_sets():
    one = _parser().parse_args(["adapt", "--config", str(YAML), "--set", "run.device=cpu", "run.amp=false"])
    many = _parser().parse_args(["adapt", "--config", str(YAML), "--set", "run.device=cpu", "--set", "run.amp=false"])
    assert one.overrides == many.overrides == ["run.device=cpu", "run.amp=false"]
