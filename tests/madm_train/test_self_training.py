"""MADM self-training end to end on synthetic scenes (RGB → events) with the tiny model, on the CPU."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from madm_train.config import load_config  # noqa: E402
from madm_train.training.trainer import _Recipe, adapt  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
YAML = REPO / "config/train/synthetic_event_tiny.yaml"


@pytest.fixture(scope="module")
def synth_folder(tmp_path_factory):
    from madm_ros.synthetic import SynthConfig, generate

    folder = tmp_path_factory.mktemp("synth")
    generate(SynthConfig(frames=30, height=64, width=128, seed=3, frames_per_sequence=10, modalities=("rgb", "events")),
             folder)
    return folder


def tiny_config(folder, out_dir, **extra):
    overrides = [
        f"data.source_root={folder}", f"data.target_root={folder}", "data.source_resize_hw=[64, 128]",
        "data.target_resize_hw=[64, 128]", "data.crop_hw=[64, 64]", "data.batch_size=1", "data.rare_class_min_pixels=50",
        "optim.max_iter=4", "dplg.end_iter=3", f"run.out_dir={out_dir}", "run.log_every=1", "run.eval_every=0",
        "run.checkpoint_every=2", "run.checkpoints_total_limit=3",
    ] + [f"{k}={v}" for k, v in extra.items()]
    return load_config(YAML, overrides)


def weights(run_dir):
    from safetensors.torch import load_file

    return load_file(str(run_dir / "model" / "model.safetensors"))


@pytest.fixture(scope="module")
def uninterrupted(synth_folder, tmp_path_factory):
    return adapt(tiny_config(synth_folder, tmp_path_factory.mktemp("run") / "a"), progress=False)


@pytest.mark.slow
def test_a_short_run_writes_model_checkpoints_log_and_metrics(uninterrupted):
    metrics = json.loads((uninterrupted / "metrics.json").read_text())
    assert 0 <= metrics["miou"] <= 1 and set(metrics["per_class_iou"]) >= {"road", "sky", "car"}
    assert sorted(p.name for p in (uninterrupted / "checkpoints").iterdir()) == ["checkpoint-2", "checkpoint-4"]
    lines = [json.loads(line) for line in (uninterrupted / "log.jsonl").read_text().splitlines()]
    assert [line["iteration"] for line in lines] == [1, 2, 3, 4]
    assert [line["dplg_timestep"] for line in lines][-1] == 0  # DPLG ends at end_iter = 3
    assert lines[0]["ema_alpha"] == 0 and lines[1]["ema_alpha"] == 0.5
    assert (uninterrupted / "config.yaml").is_file() and (uninterrupted / "eval-final" / "metrics.md").is_file()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    board = EventAccumulator(str(uninterrupted / "tensorboard")).Reload()
    assert {"train/loss", "train/pseudo_label_weight", "eval/miou"} <= set(board.Tags()["scalars"])
    assert len(board.Tags()["images"]) == 1
    from madm_train.models.madm_model import MadmModel

    model = MadmModel.load(uninterrupted / "model").eval()
    with torch.no_grad():
        logits, _ = model(torch.rand(1, 3, 64, 64))
    assert logits.shape == (1, 11, 64, 64)


@pytest.mark.slow
def test_training_changes_the_weights(uninterrupted):
    from madm_train.models.madm_model import MadmModel
    from madm_train.models.tiny_sd import build_tiny_model

    trained = MadmModel.load(uninterrupted / "model")
    fresh = build_tiny_model(uninterrupted / "tiny_sd", 11)
    changed = [n for n, p in trained.head.named_parameters() if not torch.equal(p, dict(fresh.head.named_parameters())[n])]
    assert changed  # the head learned something in 4 iterations
    vae_same = all(torch.equal(p, q) for p, q in zip(trained.backbone.vae.parameters(), fresh.backbone.vae.parameters()))
    assert vae_same  # the VAE is frozen


@pytest.mark.slow
def test_kill_and_resume_gives_the_weights_of_an_uninterrupted_run(synth_folder, tmp_path, uninterrupted, monkeypatch):
    real_step = _Recipe.step

    def killed(self, iteration, **kwargs):
        if iteration == 2:
            raise KeyboardInterrupt  # after checkpoint-2 was written
        return real_step(self, iteration, **kwargs)

    monkeypatch.setattr(_Recipe, "step", killed)
    with pytest.raises(KeyboardInterrupt):
        adapt(tiny_config(synth_folder, tmp_path / "b"), progress=False)
    assert not (tmp_path / "b" / "model").exists()
    monkeypatch.setattr(_Recipe, "step", real_step)
    resumed = adapt(tiny_config(synth_folder, tmp_path / "b", **{"run.resume": "latest"}), progress=False)
    expected, got = weights(uninterrupted), weights(resumed)
    assert expected.keys() == got.keys()
    different = [k for k in expected if not torch.equal(expected[k], got[k])]
    assert different == []


def test_the_cli_refuses_a_misspelt_key_with_one_line(synth_folder, tmp_path):
    result = subprocess.run([sys.executable, "-m", "madm_train", "adapt", "--config", str(YAML), "--set",
                             "optim.maxiter=3"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "optim.maxiter" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_bf16_autocast_and_gradient_checkpointing_train_on_the_cpu(synth_folder, tmp_path):
    config = tiny_config(synth_folder, tmp_path / "amp", **{"run.amp": "true", "run.amp_dtype": "bfloat16",
                                                           "model.gradient_checkpointing": "true",
                                                           "optim.max_iter": 2, "run.checkpoint_every": 0})
    run_dir = adapt(config, progress=False)
    lines = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert len(lines) == 2 and all(torch.isfinite(torch.tensor(line["loss"])) for line in lines)
    assert json.loads((run_dir / "config.json").read_text())["run"]["amp_dtype"] == "bfloat16"


@pytest.mark.slow
def test_two_processes_under_torchrun_train_identical_replicas(synth_folder, tmp_path):
    import os

    out = tmp_path / "ddp"
    overrides = [
        f"data.source_root={synth_folder}", f"data.target_root={synth_folder}", "data.source_resize_hw=[64, 128]",
        "data.target_resize_hw=[64, 128]", "data.crop_hw=[64, 64]", "data.batch_size=1", "data.rare_class_min_pixels=50",
        "optim.max_iter=3", "dplg.end_iter=2", f"run.out_dir={out}", "run.eval_every=0", "run.checkpoint_every=0",
        "run.log_every=1",
    ]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2",
               "-m", "madm_train", "adapt", "--config", str(YAML)] + [a for o in overrides for a in ("--set", o)]
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "MASTER_ADDR": "127.0.0.1"}  # process group on the loopback only
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    # adapt() compares the replicas' weights across processes at the end and fails the run if they differ
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [line["iteration"] for line in lines] == [1, 2, 3]  # only rank 0 writes
    assert json.loads((out / "metrics.json").read_text())["images"] > 0


@pytest.mark.slow
def test_source_only_starts_from_saved_weights_and_never_touches_the_target(synth_folder, tmp_path, uninterrupted,
                                                                            monkeypatch):
    config = tiny_config(synth_folder, tmp_path / "so", **{"method": "source_only",
                                                           "model.init_weights": str(uninterrupted / "model")})
    recipe = _Recipe(config, tmp_path / "so")
    start = weights(uninterrupted)
    state = recipe.model.state_dict()
    assert [k for k in start if not torch.equal(start[k], state[k])] == []  # the whole saved network, head included

    def no_target(*args, **kwargs):
        raise AssertionError("source-only drew a target batch")

    monkeypatch.setattr(recipe, "target_batch", no_target)
    scalars = recipe.step(0)
    assert set(scalars) == {"loss_source_ce", "loss", "lr", "grad_norm"}  # no teacher, mixing, LPLR
    assert scalars["loss"] == scalars["loss_source_ce"]


def test_an_sd_model_without_weights_and_a_model_of_other_classes_are_refused(synth_folder, tmp_path, uninterrupted):
    from madm_ros.errors import ConfigError
    from madm_train.training.trainer import build_model

    with pytest.raises(ConfigError, match="model.pretrained is empty"):
        build_model(tiny_config(synth_folder, tmp_path / "sd", **{"model.preset": "sd"}), 11, tmp_path)
    with pytest.raises(ConfigError, match="predicts 11 classes"):
        build_model(tiny_config(synth_folder, tmp_path / "nine", **{"model.init_weights": str(uninterrupted / "model")}),
                    9, tmp_path)
