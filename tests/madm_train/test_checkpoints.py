"""Checkpoints on accelerate: atomic folders, retention, exact resume, named bad files, no code run from pickles."""

from __future__ import annotations

import json
import logging
import pickle
import random
import zipfile
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

from madm_ros.errors import ConfigError  # noqa: E402
from madm_train.config import task_defaults  # noqa: E402
from madm_train.training.checkpoints import (  # noqa: E402
    CheckpointError,
    list_checkpoints,
    load_checkpoint,
    resolve_resume,
    save_checkpoint,
    validate_checkpoint,
)
from madm_train.training.ema import EmaTeacher  # noqa: E402
from madm_train.training.schedule import build_lr_scheduler, build_optimizer, lr_multiplier, parameter_groups  # noqa: E402
from madm_train.training.trainer import make_accelerator  # noqa: E402


def _state(seed: int = 0):
    """A prepared tiny network with the trainer's optimiser, schedule and EMA teacher (CPU, fp32, one process)."""
    config = task_defaults("depth")
    config = type(config)(task="depth", method=config.method, data=config.data, optim=config.optim,
                          run=type(config.run)(device="cpu", amp=False))
    accelerator = make_accelerator(config)
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1))
    optimizer = build_optimizer(parameter_groups([net], lr=5e-6, weight_decay=0.05), config.optim)
    scheduler = build_lr_scheduler(optimizer, config.optim)
    net, optimizer, scheduler = accelerator.prepare(net, optimizer, scheduler)
    return accelerator, net, optimizer, scheduler, EmaTeacher({"net": net})


def _step(state, i: int, generators) -> tuple:
    _, net, optimizer, scheduler, ema = state
    net(torch.rand(2, 3, 4, 4)).square().mean().backward()
    optimizer.step()
    optimizer.zero_grad()
    scheduler.step()
    ema.update(i)
    return (random.random(), float(np.random.rand()), torch.rand(1).item(),
            torch.rand(1, generator=generators["mix"]).item(), float(generators["data"].random()))


def _generators():
    return {"mix": torch.Generator().manual_seed(7), "data": np.random.default_rng(8), "k0": random.Random(9)}


def _save(state, folder: Path, step: int, **kwargs) -> Path:
    return save_checkpoint(state[0], folder, step, ema=state[4], **kwargs)


def test_a_resumed_run_continues_bit_for_bit(tmp_path: Path):
    random.seed(1), np.random.seed(1)
    state, gens = _state(), _generators()
    for i in range(3):
        _step(state, i, gens)
    _save(state, tmp_path, 3, generators=gens, config=task_defaults("depth").to_dict())
    expected_draws = [_step(state, i, gens) for i in range(3, 6)]
    expected = {k: v.clone() for k, v in state[1].state_dict().items()}
    expected_ema = {k: v.clone() for k, v in state[4].state_dict().items()}

    random.seed(99), np.random.seed(99)
    resumed, gens2 = _state(seed=5), {"mix": torch.Generator(), "data": np.random.default_rng(0), "k0": random.Random(0)}
    info = validate_checkpoint(tmp_path / "checkpoint-3")
    assert info.step == 3 and info.config["method"]["dplg"]["end_iter"] == 5000
    assert load_checkpoint(resumed[0], info, ema=resumed[4], generators=gens2) == 3
    assert resumed[2].param_groups[0]["lr"] == pytest.approx(5e-6 * lr_multiplier(3, 10_000))
    assert gens2["k0"].random() == _generators()["k0"].random()  # python generators restored too (none drawn yet)
    gens2["k0"] = random.Random(9)
    assert [_step(resumed, i, gens2) for i in range(3, 6)] == expected_draws
    assert all(torch.equal(v, expected[k]) for k, v in resumed[1].state_dict().items())
    assert all(torch.equal(v, expected_ema[k]) for k, v in resumed[4].state_dict().items())


def test_a_crash_while_saving_leaves_no_checkpoint_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    state = _state()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("simulated crash")

    monkeypatch.setattr(type(state[0]), "save_state", crash)
    with pytest.raises(KeyboardInterrupt):
        _save(state, tmp_path, 10)
    assert list(tmp_path.iterdir()) == []
    assert resolve_resume(tmp_path, "latest") is None


def test_leftovers_are_never_taken_for_checkpoints_and_retention_keeps_the_newest(tmp_path: Path):
    (tmp_path / ".checkpoint-5.partial").mkdir()
    (tmp_path / "checkpoint-7").mkdir()  # no state.json: incomplete
    assert list_checkpoints(tmp_path) == []
    state = _state()
    for step in (100, 200, 300, 1000):
        _save(state, tmp_path, step, total_limit=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-300", "checkpoint-1000"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-1000", "checkpoint-300", "checkpoint-7"]


def test_resume_latest_named_and_missing(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.INFO, logger="madm_train.training.checkpoints"):
        assert resolve_resume(tmp_path / "none", "latest") is None
    assert "starting fresh" in caplog.text
    assert resolve_resume(tmp_path, None) is None
    state = _state()
    _save(state, tmp_path, 3)
    _save(state, tmp_path, 20)
    assert resolve_resume(tmp_path, "latest") == tmp_path / "checkpoint-20"
    assert resolve_resume(tmp_path, "checkpoint-3") == tmp_path / "checkpoint-3"
    assert resolve_resume(tmp_path, str(tmp_path / "checkpoint-3")) == tmp_path / "checkpoint-3"
    with pytest.raises(ConfigError, match=r"checkpoint 'checkpoint-7' not found .*available: checkpoint-3, checkpoint-20"):
        resolve_resume(tmp_path, "checkpoint-7")


def _truncate(file: Path) -> None:
    file.write_bytes(file.read_bytes()[:-16])  # a cut copy: the header intact, the data short


@pytest.mark.parametrize(("damage", "message"), [
    (lambda c: _truncate(c / "model.safetensors"), r"model\.safetensors is bad — it is truncated"),
    (lambda c: (c / "state.json").write_text("{broken"), r"state\.json is unreadable"),
    (lambda c: _truncate(c / "optimizer.bin"), r"optimizer\.bin is bad — it is not a complete torch\.save archive"),
    (lambda c: (c / "ema.safetensors").unlink(), r"ema\.safetensors is bad — it is missing"),
])
def test_a_damaged_checkpoint_is_refused_naming_the_file_and_the_checkpoint_to_use_instead(tmp_path, damage, message):
    state = _state()
    _save(state, tmp_path, 2)
    _save(state, tmp_path, 4)
    damage(tmp_path / "checkpoint-4")
    with pytest.raises(CheckpointError, match=message + r".*--resume checkpoint-2"):
        validate_checkpoint(tmp_path / "checkpoint-4")
    validate_checkpoint(tmp_path / "checkpoint-2")  # the earlier one is fine


def test_the_only_checkpoint_damaged_says_to_start_fresh(tmp_path: Path):
    _save(_state(), tmp_path, 2)
    _truncate(tmp_path / "checkpoint-2" / "model.safetensors")
    with pytest.raises(CheckpointError, match="no earlier checkpoint exists: start fresh in another folder"):
        validate_checkpoint(tmp_path / "checkpoint-2")


def test_pickled_files_are_read_without_running_their_code(tmp_path: Path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    state = _state()
    folder = _save(state, tmp_path / "checkpoints", 1)
    with zipfile.ZipFile(folder / "optimizer.bin", "w") as archive:  # a torch.save archive whose pickle runs code
        archive.writestr("archive/data.pkl", pickle.dumps(Payload(), protocol=2))
        archive.writestr("archive/version", "3\n")
    info = validate_checkpoint(folder)
    with pytest.raises(CheckpointError, match="cannot resume from .*optimizer|Unpickl|weights_only"):
        load_checkpoint(state[0], info, ema=state[4])
    assert not marker.exists()


def test_a_checkpoint_of_another_process_count_or_method_is_refused(tmp_path: Path):
    state = _state()
    folder = _save(state, tmp_path, 1, generators={"mix": torch.Generator()})
    with pytest.raises(CheckpointError, match="written by 1 process.*this run has 2"):
        validate_checkpoint(folder, processes=2)
    with pytest.raises(CheckpointError, match=r"holds no state for generator\(s\) \['data', 'k0'\]"):
        load_checkpoint(state[0], validate_checkpoint(folder), ema=state[4], generators=_generators())
    state_file = folder / "state.json"
    state_file.write_text(json.dumps({**json.loads(state_file.read_text()), "format": 1}))
    with pytest.raises(CheckpointError, match="checkpoint format 1, this version reads 2"):
        validate_checkpoint(folder)
