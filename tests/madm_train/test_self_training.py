"""The trainer end to end with the registry's methods (MADM, source-only) on synthetic scenes (RGB → events), on the CPU."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

torch = pytest.importorskip("torch")

from madm_ros.errors import ConfigError  # noqa: E402
from madm_train.config import load_config  # noqa: E402
from madm_train.methods.madm.method import MadmMethod  # noqa: E402
from madm_train.training.trainer import train  # noqa: E402
from tests.madm_train.tiny_runs import log_lines, tiny_overrides, weights  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
YAML = REPO / "config/train/synthetic_event_tiny.yaml"


def tiny_config(folder, out_dir, **extra):
    return load_config(YAML, [*tiny_overrides(folder, out_dir), "method.dplg.end_iter=3",
                              *(f"{k}={v}" for k, v in extra.items())])


@pytest.fixture(scope="module")
def uninterrupted(synth_folder, tmp_path_factory):
    return train(tiny_config(synth_folder, tmp_path_factory.mktemp("run") / "a"), progress=False)


@pytest.mark.slow
def test_a_short_run_writes_model_checkpoints_log_and_metrics(uninterrupted):
    metrics = json.loads((uninterrupted / "metrics.json").read_text())
    assert 0 <= metrics["miou"] <= 1 and set(metrics["per_class_iou"]) >= {"road", "sky", "car"}
    assert sorted(p.name for p in (uninterrupted / "checkpoints").iterdir()) == ["checkpoint-2", "checkpoint-4"]
    lines = log_lines(uninterrupted)
    assert [line["iteration"] for line in lines] == [1, 2, 3, 4]
    assert [line["dplg_timestep"] for line in lines][-1] == 0  # DPLG ends at end_iter = 3
    assert lines[0]["ema_alpha"] == 0 and lines[1]["ema_alpha"] == 0.5
    assert lines[0]["lr"] == pytest.approx(1e-4 * 0.067)  # the lr the first step used: the warm-up's start
    assert (uninterrupted / "config.yaml").is_file() and (uninterrupted / "eval-final" / "metrics.md").is_file()
    assert json.loads((uninterrupted / "config.json").read_text())["method"]["name"] == "madm"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    board = EventAccumulator(str(uninterrupted / "tensorboard")).Reload()
    assert {"train/loss", "train/pseudo_label_weight", "eval/miou"} <= set(board.Tags()["scalars"])
    assert len(board.Tags()["images"]) == 1
    from madm_train.models.saved import load_saved

    model = load_saved(uninterrupted / "model")
    with torch.no_grad():
        logits = model.logits(torch.rand(1, 3, 64, 64))
    assert logits.shape == (1, 11, 64, 64) and model.format == "madm-model/1"


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
    """What is promised: a resume restores every state and random stream (weights, AdamW, schedule, EMA
    teacher, Python/NumPy/torch RNGs, the data, rare-class, ClassMix and k₀ generators), so the resumed
    run repeats the uninterrupted run's draws and its weights bit for bit wherever the platform's kernels
    are run-to-run deterministic (on a CPU with MKL: tests/conftest.py sets its reproducible mode, without
    which two uninterrupted runs on a busy machine differed by up to 2e-5, and a resumed one by as much).
    Where they are not (a second uninterrupted run in this process already differs), bit equality is not
    a property of the resume, and the test asks instead that the resumed weights be as close to the
    uninterrupted ones as a second uninterrupted run's are, and that every draw (DPLG timestep, learning
    rate) repeat exactly."""
    real_step = MadmMethod.step

    def killed(self, context, source, target):
        if context.iteration == 2:
            raise KeyboardInterrupt  # after checkpoint-2 was written
        return real_step(self, context, source, target)

    monkeypatch.setattr(MadmMethod, "step", killed)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(synth_folder, tmp_path / "b"), progress=False)
    assert not (tmp_path / "b" / "model").exists()
    monkeypatch.setattr(MadmMethod, "step", real_step)
    resumed = train(tiny_config(synth_folder, tmp_path / "b", **{"run.resume": "latest"}), progress=False)
    expected, got = weights(uninterrupted), weights(resumed)
    assert expected.keys() == got.keys()
    assert [line["iteration"] for line in log_lines(resumed)] == [1, 2, 3, 4]  # the log continues, no repeats
    draws = ("dplg_timestep", "lr", "ema_alpha")
    assert [{k: line[k] for k in draws} for line in log_lines(resumed)] == \
        [{k: line[k] for k in draws} for line in log_lines(uninterrupted)]
    different = [k for k in expected if not torch.equal(expected[k], got[k])]
    if not different:
        return
    rerun = weights(train(tiny_config(synth_folder, tmp_path / "c"), progress=False))
    platform_noise = [k for k in expected if not torch.equal(expected[k], rerun[k])]
    assert platform_noise, (f"{len(different)} tensors differ after the resume (first: {different[:3]}) while two "
                            "uninterrupted runs agree bit for bit: the resume lost some state")
    gap = max(float((expected[k] - got[k]).abs().max()) for k in different)
    noise = max(float((expected[k] - rerun[k]).abs().max()) for k in platform_noise)
    assert gap <= 10 * noise, f"resumed weights differ by up to {gap:g}, two uninterrupted runs by up to {noise:g}"


def test_starting_fresh_over_a_run_or_resuming_past_max_iter_is_refused_and_changes_nothing(synth_folder, uninterrupted):
    """A fresh run in a run folder would overwrite its model and log, and trimming checkpoints would delete its own."""
    before = _snapshot(uninterrupted)
    with pytest.raises(ConfigError, match=r"already holds a run \(checkpoint-\d+.*model\); continue it with --resume latest"):
        train(tiny_config(synth_folder, uninterrupted), progress=False)
    with pytest.raises(ConfigError, match=r"checkpoint-4 is at iteration 4, past optim.max_iter 2"):
        train(tiny_config(synth_folder, uninterrupted, **{"run.resume": "latest", "optim.max_iter": 2}), progress=False)
    assert _snapshot(uninterrupted) == before


def test_exporting_a_teacher_is_refused_before_any_tracing_or_writing(uninterrupted, tmp_path):
    from madm_train.deploy.export import ExportOptions, export

    with pytest.raises(ConfigError, match=r"is an adapted teacher .* not a distilled student: distil it first"):
        export(ExportOptions(student=uninterrupted / "model", out_dir=tmp_path / "export"))
    assert not (tmp_path / "export").exists()
    from madm_ros.errors import MadmError

    with pytest.raises(MadmError, match=rf"it looks like a run or distill folder: give {uninterrupted / 'model'}"):
        export(ExportOptions(student=uninterrupted, out_dir=tmp_path / "export"))  # the run folder, not its model/


def test_ctrl_c_during_adapt_is_one_line_naming_the_checkpoint_to_resume_from(synth_folder, tmp_path, monkeypatch, capsys):
    import madm_train.training.trainer as trainer
    from madm_train.cli import main

    def interrupted(config, progress):
        (Path(config.run.out_dir) / "checkpoints" / "checkpoint-2").mkdir(parents=True)
        (Path(config.run.out_dir) / "checkpoints" / "checkpoint-2" / "state.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "train", interrupted)
    code = main(["adapt", "--config", str(YAML), "--set", *tiny_overrides(synth_folder, tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 130 and err[-1] == (f"adapt: interrupted; the newest checkpoint is {tmp_path / 'run/checkpoints/checkpoint-2'}"
                                       ": continue with --resume latest")
    assert not any("Traceback" in line for line in err)


def test_the_cli_refuses_a_misspelt_key_with_one_line(synth_folder, tmp_path):
    result = subprocess.run([sys.executable, "-m", "madm_train", "adapt", "--config", str(YAML), "--set",
                             "optim.maxiter=3"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "optim.maxiter" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_bf16_autocast_and_gradient_checkpointing_train_on_the_cpu(synth_folder, tmp_path):
    config = tiny_config(synth_folder, tmp_path / "amp", **{"run.amp": "true", "run.amp_dtype": "bfloat16",
                                                           "method.model.gradient_checkpointing": "true",
                                                           "optim.max_iter": 2, "run.checkpoint_every": 0})
    run_dir = train(config, progress=False)
    lines = log_lines(run_dir)
    assert len(lines) == 2 and all(torch.isfinite(torch.tensor(line["loss"])) for line in lines)
    assert json.loads((run_dir / "config.json").read_text())["run"]["amp_dtype"] == "bfloat16"


@pytest.mark.slow
def test_gradient_accumulation_sums_the_batches_of_one_step(synth_folder, tmp_path):
    one = train(tiny_config(synth_folder, tmp_path / "one", **{"optim.max_iter": 1, "run.checkpoint_every": 0}),
                progress=False)
    two = train(tiny_config(synth_folder, tmp_path / "two", **{"optim.max_iter": 1, "run.checkpoint_every": 0,
                                                              "optim.gradient_accumulation_steps": 2}), progress=False)
    (line_one,), (line_two,) = log_lines(one), log_lines(two)
    assert line_one["lr"] == line_two["lr"]  # one optimiser step each: the schedule moved once
    assert line_two["loss_source_ce"] != line_one["loss_source_ce"]  # the mean over two different batches
    changed = [k for k, v in weights(one).items() if not torch.equal(v, weights(two)[k])]
    assert changed  # a different (summed) gradient, hence different weights


@pytest.mark.slow
def test_two_processes_under_torchrun_train_identical_replicas(synth_folder, tmp_path):
    out = tmp_path / "ddp"
    overrides = tiny_overrides(synth_folder, out, **{"optim.max_iter": 3, "method.dplg.end_iter": 2,
                                                     "run.checkpoint_every": 2})
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2",
               "-m", "madm_train", "adapt", "--config", str(YAML), "--set", *overrides]
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "MASTER_ADDR": "127.0.0.1"}  # process group on the loopback only
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    # the trainer gathers every replica's weight checksum at the end and fails the run if they differ
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 process(es) on cpu (ddp)" in result.stderr
    assert [line["iteration"] for line in log_lines(out)] == [1, 2, 3]  # only rank 0 writes
    assert json.loads((out / "metrics.json").read_text())["images"] > 0
    checkpoint = out / "checkpoints" / "checkpoint-3"
    assert {"generators_0.json", "generators_1.json", "random_states_0.pkl", "random_states_1.pkl"} <= \
        {p.name for p in checkpoint.iterdir()}  # each process resumes its own streams
    states = [json.loads((checkpoint / f"generators_{rank}.json").read_text())["index"] for rank in (0, 1)]
    assert states[0] != states[1]  # the processes drew different batches


@pytest.mark.slow
def test_source_only_comes_from_the_registry_starts_from_saved_weights_and_never_touches_the_target(
        synth_folder, tmp_path, uninterrupted, monkeypatch):
    from madm_train.training.batches import BatchDrawer

    def no_target(*args, **kwargs):
        raise AssertionError("source-only drew a target batch")

    monkeypatch.setattr(BatchDrawer, "target_batch", no_target)
    with pytest.raises(ConfigError, match="switches .* method madm, whose keys method.dplg, method.lplr"):
        load_config(YAML, ["method.name=source_only"])  # a run carries only its method's keys
    values = yaml.safe_load(YAML.read_text())
    values["method"] = {"name": "source_only", "model": values["method"]["model"]}
    (tmp_path / "source_only.yaml").write_text(yaml.safe_dump(values))
    config = load_config(tmp_path / "source_only.yaml", [
        *tiny_overrides(synth_folder, tmp_path / "so"), f"method.model.init_weights={uninterrupted / 'model'}",
        "optim.max_iter=1", "run.checkpoint_every=0"])
    assert type(config.method).__name__ == "SourceOnlyConfig" and config.to_dict()["method"]["name"] == "source_only"
    run_dir = train(config, progress=False)
    (line,) = log_lines(run_dir)
    assert set(line) == {"iteration", "loss_source_ce", "loss", "lr", "grad_norm", "seconds"}  # no teacher, mixing, LPLR
    assert line["loss"] == line["loss_source_ce"]
    start, after = weights(uninterrupted), weights(run_dir)
    moved = [k for k in start if not torch.equal(start[k], after[k])]
    assert moved and all(torch.equal(start[k], after[k]) for k in start if k.startswith("backbone.vae."))


def test_an_sd_model_without_weights_and_a_model_of_other_classes_are_refused(synth_folder, tmp_path, uninterrupted):
    from madm_ros.palettes import get_label_set
    from madm_train.methods.base import BuildContext

    config = tiny_config(synth_folder, tmp_path / "sd", **{"method.model.preset": "sd"})
    with pytest.raises(ConfigError, match="method.model.pretrained is empty"):
        config.method.build(BuildContext(config, get_label_set("dsec11"), tmp_path))
    config = tiny_config(synth_folder, tmp_path / "nine", **{"method.model.init_weights": str(uninterrupted / "model")})
    with pytest.raises(ConfigError, match="predicts 11 classes"):
        config.method.build(BuildContext(config, get_label_set("fmb9"), tmp_path))


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
@pytest.mark.parametrize(("damage", "message"), [
    (lambda c: (c / "model.safetensors").write_bytes((c / "model.safetensors").read_bytes()[:-64]),
     r"model\.safetensors is bad — it is truncated"),
    (lambda c: (c / "state.json").write_text('{"step": 4'), r"state\.json is unreadable"),
])
def test_a_failed_resume_names_the_bad_file_and_the_checkpoint_to_use_and_changes_nothing(
        synth_folder, tmp_path, uninterrupted, damage, message):
    import shutil

    from madm_train.training.checkpoints import CheckpointError

    run_dir = tmp_path / "run"
    shutil.copytree(uninterrupted, run_dir)
    damage(run_dir / "checkpoints" / "checkpoint-4")
    before = _snapshot(run_dir)
    with pytest.raises(CheckpointError, match=message + r".*--resume checkpoint-2"):
        train(tiny_config(synth_folder, run_dir, **{"run.resume": "latest", "optim.max_iter": 6}), progress=False)
    assert _snapshot(run_dir) == before  # not even config.yaml was rewritten
    resumed = train(tiny_config(synth_folder, run_dir, **{"run.resume": "checkpoint-2"}), progress=False)
    assert [(line["iteration"], line["dplg_timestep"]) for line in log_lines(resumed)] == \
        [(line["iteration"], line["dplg_timestep"]) for line in log_lines(uninterrupted)]  # the log was cut back to 2


@pytest.mark.slow
def test_a_network_that_resizes_its_input_regresses_the_palette_latent_at_its_own_size(synth_folder, tmp_path):
    """The reference resizes every crop to 512²; the LPLR target must then follow the network, not the crop."""
    config = tiny_config(synth_folder, tmp_path / "resize", **{"method.model.input_size": 128, "optim.max_iter": 1,
                                                              "run.checkpoint_every": 0, "method.lplr.target_weight": 1.0})
    run_dir = train(config, progress=False)
    (line,) = log_lines(run_dir)
    assert line["loss_source_lplr"] > 0 and "loss_mixed_lplr" in line  # both latent targets at 128², not the crop
    with pytest.raises(ConfigError, match=r"data\.crop_hw \[32, 32\] must be multiples of 64"):
        tiny_config(synth_folder, tmp_path / "bad", **{"data.crop_hw": "[32, 32]"})  # refused before any model loads


def test_the_noise_seed_reaches_the_shared_noise(synth_folder, tmp_path):
    from madm_ros.palettes import get_label_set
    from madm_train.methods.base import BuildContext

    networks = [tiny_config(synth_folder, tmp_path, **{"method.model.noise_seed": seed}).method.build(
        BuildContext(tiny_config(synth_folder, tmp_path), get_label_set("dsec11"), tmp_path)).network for seed in (42, 7)]
    assert [n.backbone.noise_seed for n in networks] == [42, 7]
    assert not torch.equal(networks[0].backbone.shared_noise, networks[1].backbone.shared_noise)
