"""The synthetic benchmark end to end at micro size: every method and seed trained, scored, tabulated, reusable."""

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from madm_ros.errors import ConfigError  # noqa: E402
from madm_train import benchmark  # noqa: E402
from madm_train.benchmark import LAYOUT_ONLY, METHODS, Preset, run_benchmark  # noqa: E402
from madm_train.methods import METHODS as METHOD_REGISTRY  # noqa: E402
from madm_train.training.prior import PriorConfig  # noqa: E402

MICRO = Preset(frames=30, prior_frames=6, generate_hw=(64, 128), network_hw=(64, 64), batch_size=1, warmup_iters=2,
               adapt_iters=2, lr=1e-4, device="cpu", amp=False,
               prior=PriorConfig(crop=64, vae_steps=2, unet_steps=2, batch_size=2), seeds=(0, 1), iccld_sampling_steps=2)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(benchmark.PRESETS, "micro", MICRO)
        result = run_benchmark(out, preset="micro", modalities=["events"])
    return out, result


def _config(run_dir):
    return json.loads((run_dir / "config.json").read_text())


@pytest.mark.slow
def test_every_method_is_reported_with_mean_spread_and_seeds(finished):
    out, result = finished
    assert set(result) == {"events", "settings"} and set(result["events"]) == {*METHODS, LAYOUT_ONLY}
    for entry in result["events"].values():
        assert entry["seeds"] == [0, 1] and len(entry["miou_per_seed"]) == 2
        assert entry["miou_mean"] == pytest.approx(np.mean(entry["miou_per_seed"]))
        assert entry["miou_std"] == pytest.approx(np.std(entry["miou_per_seed"], ddof=1))
        assert 0 <= entry["miou_mean"] <= 100
    # the numbers are the runs' own metrics (source-only scored on the modality, MADM by its run)
    madm = json.loads((out / "runs/seed1/events/madm/metrics.json").read_text())
    assert result["events"]["madm"]["miou_per_seed"][1] == pytest.approx(100 * madm["miou"])
    source = json.loads((out / "runs/seed0/source_only/eval-events/metrics.json").read_text())
    assert result["events"]["source_only"]["miou_per_seed"][0] == pytest.approx(100 * source["miou"])
    layout = json.loads((out / "layout_only/eval-events/metrics.json").read_text())  # no seed: one score, spread 0
    assert result["events"][LAYOUT_ONLY]["miou_per_seed"] == pytest.approx([100 * layout["miou"]] * 2)
    assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(result))


@pytest.mark.slow
def test_methods_differ_only_in_what_they_switch_off(finished):
    out, _ = finished
    runs = out / "runs/seed0"
    warmup, warmup_no_prior = _config(runs / "warmup")["method"], _config(runs / "warmup_no_prior")["method"]
    assert warmup["name"] == "source_only" and warmup["model"]["pretrained"] == str(out / "prior")
    assert warmup_no_prior["model"]["pretrained"] == ""  # random tiny weights
    full, no_dplg, no_lplr = (_config(runs / "events" / m) for m in ("madm", "madm_no_dplg", "madm_no_lplr"))
    method = full["method"]
    assert method["name"] == "madm" and method["dplg"]["enabled"] and method["lplr"]["source_weight"] == 20.0
    assert method["dplg"]["end_iter"] == 2  # the events task's released 8k of 10k, scaled to 2 iterations
    assert no_dplg["method"]["dplg"]["enabled"] is False and no_dplg["method"]["lplr"] == method["lplr"]
    assert no_lplr["method"]["lplr"]["source_weight"] == 0 and no_lplr["method"]["lplr"]["target_weight"] == 0
    for config in (full, no_dplg, no_lplr, _config(runs / "source_only")):
        assert config["method"]["model"]["init_weights"] == str(runs / "warmup" / "model")
        assert config["optim"]["max_iter"] == 2
    oracle = _config(runs / "events" / "oracle")  # the same warm-up, then the target modality's labelled frames
    assert (oracle["method"]["name"], oracle["data"]["source_modality"]) == ("source_only", "events")
    assert oracle["method"]["model"]["init_weights"] == str(runs / "warmup" / "model") and oracle["optim"] == full["optim"]
    assert full["data"]["source_modality"] == _config(runs / "source_only")["data"]["source_modality"] == "rgb"
    no_prior = _config(runs / "events" / "madm_no_prior")["method"]
    assert no_prior["model"]["init_weights"] == str(runs / "warmup_no_prior" / "model")
    # DIFF: its own warm-up (generalisation, IPKL) on the prior's frozen UNet, then both modes from it
    diff_warmup = _config(runs / "warmup_diff")
    assert (diff_warmup["method"]["name"], diff_warmup["method"]["mode"]) == ("diff", "generalisation")
    assert diff_warmup["method"]["model"]["pretrained"] == str(out / "prior") and diff_warmup["method"]["ipkl"]["enabled"]
    diff, diff_general = _config(runs / "events" / "diff"), _config(runs / "diff_generalisation")
    assert (diff["method"]["mode"], diff_general["method"]["mode"]) == ("adaptation", "generalisation")
    for config in (diff, diff_general):
        assert config["method"]["model"]["init_weights"] == str(runs / "warmup_diff" / "model")
        assert config["optim"] == full["optim"]  # the benchmark's optimiser for every method
    assert not (runs / "events" / "diff_generalisation").exists()  # target-free: one run, scored per modality
    # ICCLD: its own source-only warm-ups (with and without inter-coder connections), stage 1, then stage 2 from it
    for name, inter_coder in (("warmup_iccld", "add"), ("warmup_iccld_no_inter_coder", "none")):
        warmup = _config(runs / name)["method"]
        assert (warmup["name"], warmup["stage"], warmup["target_free"]) == ("iccld", 1, True)
        assert warmup["model"]["inter_coder"] == inter_coder and warmup["model"]["pretrained"] == str(out / "prior")
    for stage_two, stage_one, warmup in (("iccld", "iccld_no_stage2", "warmup_iccld"),
                                         ("iccld_no_inter_coder", "iccld_no_inter_coder_no_stage2",
                                          "warmup_iccld_no_inter_coder")):
        one, two = _config(runs / "events" / stage_one)["method"], _config(runs / "events" / stage_two)["method"]
        assert (one["stage"], one["target_free"], one["model"]["init_weights"]) == (1, False, str(runs / warmup / "model"))
        assert two["stage"] == 2 and two["model"]["init_weights"] == str(runs / "events" / stage_one / "model")
        assert two["model"]["pretrained"] == str(out / "prior")  # ε_θ from the prior's UNet
        assert two["model"]["inter_coder"] == one["model"]["inter_coder"] and two["model"]["sampling_steps"] == 2
    assert {v.method for v in benchmark.VARIANTS.values()} <= set(METHOD_REGISTRY)  # rows name registry methods


@pytest.mark.slow
def test_table_and_figure_are_written(finished):
    import cv2

    out, result = finished
    table = (out / "results.md").read_text()
    assert "| MADM (DPLG + LPLR) | ✓ | ✓ | ✓ |" in table and "events" in table
    assert f"{result['events']['madm']['miou_mean']:.1f} ± {result['events']['madm']['miou_std']:.1f}" in table
    figure = cv2.imread(str(out / "figure_events.png"))
    # 3 test frames; input | GT | source-only | MADM | DIFF | ICCLD, 2× upscaled
    assert figure.shape == (2 * 3 * 64, 2 * 6 * 64, 3)
    assert "| DIFF, adaptation |  |  | ✓ |" in table and "| ICCLD (both stages) |  |  | ✓ |" in table
    assert "| Oracle (target labels) |  |  | ✓ |" in table
    layout = result["events"][LAYOUT_ONLY]
    assert f"| Layout only (no image) |  |  |  | {benchmark._cell(layout)} |" in table
    assert benchmark._cell(layout).startswith(f"{layout['miou_mean']:.1f} ± 0.0")


def test_each_row_reports_the_fraction_of_the_source_only_to_oracle_gap_it_closes():
    def metrics(miou):
        return {"miou": miou / 100, "class_names": ["road"], "per_class_iou": {"road": miou / 100}}

    plan = benchmark._Plan(Path("unused"), MICRO, (0, 1), ("events",))
    per_seed = {seed: {"events": {"source_only": metrics(10 + seed), "oracle": metrics(50 + seed),
                                  "madm": metrics(20 + seed)}} for seed in (0, 1)}
    layout = {"events": metrics(5.5)}
    rows = benchmark._summary(per_seed, plan, layout)["events"]
    assert rows["madm"]["gap_closed"] == pytest.approx(0.25)  # (20.5 − 10.5) / (50.5 − 10.5)
    assert rows["source_only"]["gap_closed"] == 0 and rows["oracle"]["gap_closed"] == 1
    assert rows[LAYOUT_ONLY]["gap_closed"] == pytest.approx(-0.125)  # below source only
    assert benchmark._cell(rows["madm"]) == "20.5 ± 0.7 (25 %)"
    per_seed[0]["events"]["oracle"] = per_seed[0]["events"]["source_only"]  # no gap, no fraction
    per_seed[1]["events"]["oracle"] = per_seed[1]["events"]["source_only"]
    rows = benchmark._summary(per_seed, plan, layout)["events"]
    assert "gap_closed" not in rows["madm"] and benchmark._cell(rows["madm"]) == "20.5 ± 0.7"


@pytest.mark.slow
def test_a_second_call_reuses_finished_runs(finished, monkeypatch):
    out, result = finished

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr("madm_train.training.trainer.train", no_training)
    monkeypatch.setitem(benchmark.PRESETS, "micro", MICRO)
    again = run_benchmark(out, preset="micro", modalities=["events"])
    assert again["events"] == result["events"]


def test_unknown_presets_and_modalities_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="unknown preset"):
        run_benchmark(tmp_path, preset="huge")
    with pytest.raises(ConfigError, match="modalities"):
        run_benchmark(tmp_path, modalities=["sonar"])
    with pytest.raises(ConfigError, match="seed"):
        run_benchmark(tmp_path, seeds=[])
    with pytest.raises(ConfigError, match="variants must be among"):
        run_benchmark(tmp_path, variants=["madm", "mdam"])
    with pytest.raises(ConfigError, match=r"variants \['iccld_no_stage2'\] must run too"):
        run_benchmark(tmp_path, variants=["iccld"])


@pytest.mark.slow
def test_records_carry_finished_runs_to_a_fresh_work_folder(finished, tmp_path, monkeypatch):
    out, result = finished
    records = tmp_path / "records"

    def no_training(*args, **kwargs):
        raise AssertionError("a recorded run was trained again")

    monkeypatch.setattr("madm_train.training.trainer.train", no_training)
    monkeypatch.setattr("madm_train.training.prior.pretrain_prior", no_training)
    monkeypatch.setitem(benchmark.PRESETS, "micro", MICRO)
    run_benchmark(out, preset="micro", modalities=["events"], records=records)  # runs finished before: copied out
    kept = sorted(p.relative_to(records).as_posix() for p in records.rglob("*") if p.is_file())
    assert "runs/seed1/events/iccld/metrics.json" in kept and "runs/seed0/source_only/eval-events/metrics.json" in kept
    assert all(name.endswith(".json") for name in kept) and not any("/model/" in name for name in kept)

    fresh = tmp_path / "fresh"
    again = run_benchmark(fresh, preset="micro", modalities=["events"], records=records)
    assert again["events"] == result["events"]
    assert not (fresh / "figure_events.png").exists()  # no weights to draw from: the earlier figure stays
    trained = len(list(out.glob("runs/seed*/**/seconds.json")))
    assert list(again["settings"]["runs_by_prior_sha256"].values()) == [trained]  # one prior made every run

    digests = json.loads((records / "data.json").read_text())
    assert set(digests) == {"scenes_sha256", "prior_scenes_sha256"}
    (records / "data.json").write_text(json.dumps({**digests, "scenes_sha256": "0" * 16}))
    with pytest.raises(ConfigError, match="made from other synthetic data"):  # a changed generator: nothing is reused
        run_benchmark(fresh, preset="micro", modalities=["events"], records=records)


@pytest.mark.slow
def test_a_missing_run_retrains_only_the_models_it_continues(finished, tmp_path, monkeypatch):
    from madm_train.training import trainer

    out, _ = finished
    records = tmp_path / "records"
    monkeypatch.setitem(benchmark.PRESETS, "micro", MICRO)
    run_benchmark(out, preset="micro", modalities=["events"], records=records)
    (records / "runs" / "seed0" / "events" / "iccld" / "metrics.json").unlink()
    trained = []
    real_train = trainer.train

    def counting_train(config, **kwargs):
        trained.append(str(Path(config.run.out_dir).relative_to(tmp_path / "fresh")))
        return real_train(config, **kwargs)

    monkeypatch.setattr("madm_train.training.trainer.train", counting_train)
    again = run_benchmark(tmp_path / "fresh", preset="micro", modalities=["events"], records=records)
    # ICCLD's stage 2 continues stage 1, which continues its warm-up: none of their weights were kept
    assert trained == ["runs/seed0/warmup_iccld", "runs/seed0/events/iccld_no_stage2", "runs/seed0/events/iccld"]
    assert (records / "runs" / "seed0" / "events" / "iccld" / "metrics.json").exists()
    assert 0.0 <= again["events"]["iccld"]["miou_per_seed"][0] <= 100.0


def test_a_work_folder_of_other_scenes_is_refused_not_reused(tmp_path, monkeypatch):
    from madm_ros.synthetic import SynthConfig, generate

    street = SynthConfig(frames=MICRO.frames, height=MICRO.generate_hw[0], width=MICRO.generate_hw[1], seed=0,
                         scenes="street")
    generate(street, tmp_path / "data" / "scenes", workers=1, progress=False)  # a work folder from before `varied`
    monkeypatch.setitem(benchmark.PRESETS, "micro", MICRO)
    assert MICRO.scenes == "varied"
    with pytest.raises(ConfigError, match="other settings .*not the preset's"):
        run_benchmark(tmp_path, preset="micro", modalities=["events"])
    assert not (tmp_path / "runs").exists()


def test_the_best_label_free_row_never_is_the_oracle_and_its_folder_follows_the_row():
    from madm_train.benchmark import best_label_free_row, run_folder

    results = {"depth": {"oracle": {"miou_mean": 40.0}, "layout_only": {"miou_mean": 30.0},
                         "madm": {"miou_mean": 9.0}, "iccld_no_stage2": {"miou_mean": 9.5}, "source_only": {"miou_mean": 4.0}}}
    assert best_label_free_row(results, "depth") == "iccld_no_stage2"
    with pytest.raises(ConfigError, match="no thermal row without target labels"):
        best_label_free_row(results, "thermal")
    assert run_folder("B", 1, "madm", "depth") == Path("B/runs/seed1/depth/madm")
    assert run_folder("B", 1, "source_only", "depth") == Path("B/runs/seed1/source_only")  # one run for every modality
