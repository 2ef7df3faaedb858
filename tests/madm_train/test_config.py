"""madm_train.config: task defaults, YAML + --set loading, refusal of unknown keys, bad types and impossible values."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import yaml

from madm_ros.errors import ConfigError
from madm_train.config import TrainConfig, check_data_paths, config_from_dict, load_config, save_config, task_defaults

REPO = Path(__file__).resolve().parents[2]
TRAIN_CONFIGS = sorted((REPO / "config" / "train").glob("*.yaml"))


def write(tmp_path: Path, values: dict) -> Path:
    path = tmp_path / "task.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def test_there_are_yaml_files_for_the_three_tasks_and_three_synthetic_runs():
    assert {p.name for p in TRAIN_CONFIGS} >= {
        "cityscapes_to_deliver_depth.yaml", "cityscapes_to_fmb_infrared.yaml", "cityscapes_to_dsec_event.yaml",
        "synthetic_depth_tiny.yaml", "synthetic_thermal_tiny.yaml", "synthetic_event_tiny.yaml",
    }


@pytest.mark.parametrize("path", TRAIN_CONFIGS, ids=lambda p: p.name)
def test_every_training_yaml_loads_and_every_key_is_a_field(path: Path):
    config = load_config(path)
    assert isinstance(config, TrainConfig)
    raw = yaml.safe_load(path.read_text())
    resolved = config.to_dict()
    def compare(raw_values: dict, resolved_values: dict, prefix: str) -> None:
        for key, value in raw_values.items():
            if isinstance(value, dict):
                compare(value, resolved_values[key], f"{prefix}{key}.")
            else:
                assert resolved_values[key] == pytest.approx(value), f"{prefix}{key}"

    compare({k: v for k, v in raw.items() if isinstance(v, dict)}, resolved, "")


def header_commands(path: Path) -> list[list[str]]:
    """The ``python -m madm_train adapt …`` command lines of a YAML's header comment, as argv after the module."""
    text = "\n".join(line[1:] for line in path.read_text().splitlines() if line.startswith("#")).replace("\\\n", " ")
    return [shlex.split(line.split("python -m madm_train ", 1)[1]) for line in text.splitlines()
            if "python -m madm_train adapt" in line]


@pytest.mark.parametrize("path", TRAIN_CONFIGS, ids=lambda p: p.name)
def test_every_command_in_a_training_yamls_header_loads(path: Path):
    from madm_train.cli import _parser

    configs = []
    for argv in header_commands(path):
        args = _parser().parse_args(argv)
        assert args.config == Path("config/train") / path.name
        configs.append(load_config(REPO / args.config, args.overrides))
    if "_iccld" in path.name:  # stage 1, then stage 2 from stage 1's model in a folder of its own
        assert [c.method.stage for c in configs] == [1, 2]
        assert configs[1].method.model.init_weights == f"{configs[0].run.out_dir}/model" != configs[1].run.out_dir


def test_depth_defaults_are_the_released_madm_values():
    c = task_defaults("depth")
    assert (c.method.dplg.k0_choices, c.method.dplg.end_iter, c.method.dplg.fixed_noise) == ((60, 61), 5000, True)
    assert (c.method.lplr.source_weight, c.method.lplr.target_weight) == (1.0, 1.0)
    assert (c.data.label_set, c.data.modality, c.data.target_resize_hw) == ("dsec11", "depth", (712, 712))
    assert (c.data.source_resize_hw, c.data.crop_hw, c.data.batch_size) == ((512, 1024), (512, 512), 1)
    assert (c.data.rare_class_temperature, c.data.rare_class_min_pixels, c.data.rare_class_min_crop_ratio) == (0.01, 3000, 0.5)
    assert (c.optim.lr, c.optim.weight_decay, c.optim.grad_clip_norm, c.optim.max_iter) == (5e-6, 0.05, 0.01, 10_000)
    assert (c.optim.betas, c.optim.eps, c.optim.warmup_factor) == ((0.9, 0.999), 1e-8, 0.067)
    assert c.optim.warmup_fraction * 10_000 == pytest.approx(27.12, abs=0.01)
    assert (c.method.ema.alpha, c.method.ema.include_unet, c.method.pseudo_labels.threshold) == (0.999, False, 0.968)
    mixing = c.method.mixing
    assert (mixing.jitter_probability, mixing.jitter_strength, mixing.blur_probability) == (0.8, 0.2, 0.5)
    assert (c.method.mixing.blur_sigma, c.method.mixing.blur_kernel_fraction) == ((0.15, 1.15), 0.1)
    assert (c.method.model.finetune, c.method.model.noise_seed, c.run.seed, c.run.checkpoints_total_limit) == ("full", 42, 42, 1)
    assert (c.run.eval_every, c.run.checkpoint_every, c.run.amp) == (1000, 1000, True)


def test_infrared_defaults_use_nine_classes_and_a_later_dplg_end():
    c = task_defaults("infrared")
    assert (c.method.dplg.k0_choices, c.method.dplg.end_iter) == ((50, 51), 8000)
    assert (c.method.lplr.source_weight, c.method.lplr.target_weight) == (1.0, 1.0)
    assert (c.data.label_set, c.data.modality, c.data.target_resize_hw) == ("fmb9", "thermal", (512, 683))


def test_event_defaults_regress_only_the_source_latent_with_weight_twenty():
    c = task_defaults("events")
    assert (c.method.dplg.k0_choices, c.method.dplg.end_iter) == ((50, 51), 8000)
    assert (c.method.lplr.source_weight, c.method.lplr.target_weight) == (20.0, 0.0)
    assert (c.data.label_set, c.data.modality, c.data.target_kind) == ("dsec11", "events", "dsec_edges")


def test_rgb_defaults_are_diffs_gta5_to_cityscapes_protocol_with_madms_depth_values():
    c = task_defaults("rgb")
    d = c.data
    assert (d.source_kind, d.source_root, d.source_split, d.source_resize_hw) == ("gta5", "/data/GTA5", "train", (720, 1280))
    assert (d.target_kind, d.target_root, d.target_split, d.test_split) == ("cityscapes", "/data/cityscapes", "train", "val")
    assert (d.target_resize_hw, d.test_resize_hw, d.crop_hw) == ((512, 1024), (512, 1024), (512, 512))
    assert (d.label_set, d.modality, d.eval_classes, d.rare_class_classes) == ("cityscapes19", "rgb", "all", "source")
    assert (d.rare_class_temperature, d.rare_class_min_pixels, d.rare_class_min_crop_ratio) == (0.01, 3000, 0.5)
    # MADM has no RGB task: the depth task's DPLG and LPLR values
    assert (c.method.dplg.k0_choices, c.method.dplg.end_iter) == ((60, 61), 5000)
    assert (c.method.lplr.source_weight, c.method.lplr.target_weight) == (1.0, 1.0)
    assert task_defaults("rgb", "source_only").method.name == "source_only"
    assert task_defaults("depth").data.test_resize_hw is None  # MADM's tasks still test at the crop size
    assert c.run.out_dir == "runs/rgb"


def test_rgb_task_loads_from_yaml_and_switches_to_synthia_with_its_subsets(tmp_path: Path):
    c = load_config(write(tmp_path, {"task": "rgb"}), ["data.source_kind=synthia", "data.source_root=/data/SYNTHIA",
                                                       "data.source_resize_hw=[760, 1280]", "data.eval_classes=synthia13"])
    assert (c.data.source_kind, c.data.eval_classes, c.data.source_resize_hw) == ("synthia", "synthia13", (760, 1280))
    yaml_path, _ = save_config(c, tmp_path / "run")
    assert config_from_dict(yaml.safe_load(yaml_path.read_text())) == c


def test_rgb_task_scores_synthia_over_16_and_13_classes_in_one_run(tmp_path: Path):
    c = load_config(write(tmp_path, {"task": "rgb", "data": {"source_kind": "synthia",
                                                              "eval_classes": ["synthia16", "synthia13"]}}))
    assert c.data.eval_classes == ("synthia16", "synthia13")
    yaml_path, _ = save_config(c, tmp_path / "run")
    assert config_from_dict(yaml.safe_load(yaml_path.read_text())) == c
    assert load_config(write(tmp_path, {"task": "rgb"}), ["data.eval_classes=[synthia13]"]).data.eval_classes == ("synthia13",)


@pytest.mark.parametrize(("overrides", "message"), [
    (["data.modality=depth"], r"data\.target_kind=cityscapes is an RGB target but data\.modality is depth: "
                              r"use --set data\.modality=rgb"),
    (["data.target_kind=deliver_depth"], r"data\.modality=rgb needs an RGB target; data\.target_kind=deliver_depth"),
    (["data.label_set=dsec11", "data.eval_classes=synthia16"],
     r"data\.eval_classes=synthia16 averages Cityscapes classes; .*--set data\.label_set=cityscapes19"),
    (["data.eval_classes=synthia19"], r"data\.eval_classes must be one of 'all', 'synthia16', 'synthia13'"),
    (["data.eval_classes=[synthia16, all]"], r"data\.eval_classes must be .* or a list of one of 'synthia16', 'synthia13'"),
    (["data.eval_classes=[]"], r"data\.eval_classes=\[\] must name each subset once, e\.g\. \[synthia16, synthia13\], or be all"),
    (["data.eval_classes=[synthia16, synthia16]"], r"data\.eval_classes=\[synthia16, synthia16\] must name each subset once"),
    (["data.label_set=dsec11", "data.eval_classes=[synthia16, synthia13]"],
     r"data\.eval_classes=\[synthia16, synthia13\] averages Cityscapes classes; .*--set data\.label_set=cityscapes19"),
    (["data.source_kind=gta"], r"data\.source_kind must be one of 'cityscapes', 'gta5', 'synthia', 'folder'"),
    (["data.test_resize_hw=[0, 1024]"], r"data\.test_resize_hw must be \[height, width\] with positive integers"),
])
def test_impossible_rgb_task_values_are_refused(tmp_path: Path, overrides: list[str], message: str):
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, {"task": "rgb"}), overrides)


def test_set_overrides_replace_single_fields_with_yaml_values(tmp_path: Path):
    path = write(tmp_path, {"task": "events", "optim": {"lr": 1e-5}})
    c = load_config(path, ["optim.lr=2e-5", "data.crop_hw=[256, 256]", "method.ema.include_unet=true", "run.out_dir=2024",
                           "run.resume=latest", "method.dplg.k0_choices=[10]"])
    assert (c.optim.lr, c.data.crop_hw, c.method.ema.include_unet) == (2e-5, (256, 256), True)
    assert (c.run.out_dir, c.run.resume, c.method.dplg.k0_choices) == ("2024", "latest", (10,))
    assert c.method.lplr.source_weight == 20.0  # untouched fields keep the task's defaults


def test_set_task_switches_the_defaults_before_the_yaml_is_applied(tmp_path: Path):
    c = load_config(write(tmp_path, {"task": "depth"}), ["task=infrared"])
    assert (c.task, c.method.dplg.end_iter, c.data.label_set) == ("infrared", 8000, "fmb9")


def test_a_misspelt_yaml_key_is_refused_with_the_allowed_keys(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"unknown key 'optim\.learning_rat'.*allowed keys here: lr, weight_decay"):
        load_config(write(tmp_path, {"task": "depth", "optim": {"learning_rat": 1e-5}}))
    with pytest.raises(ConfigError, match=r"unknown key 'method\.dplgg'.*did you mean 'dplg'"):
        load_config(write(tmp_path, {"task": "depth", "method": {"name": "madm", "dplgg": {}}}))
    with pytest.raises(ConfigError, match=r"unknown key 'dplg'.*allowed keys here: task, method, data, optim, run"):
        load_config(write(tmp_path, {"task": "depth", "dplg": {}}))  # method keys live in the method section


def test_an_unknown_set_key_is_refused():
    with pytest.raises(ConfigError, match=r"unknown key 'method\.ema\.alpah' in --set \(did you mean 'alpha'\?\)"):
        load_config(TRAIN_CONFIGS[0], ["method.ema.alpah=0.99"])
    with pytest.raises(ConfigError, match="must look like section.key=value"):
        load_config(TRAIN_CONFIGS[0], ["method.ema.alpha"])
    with pytest.raises(ConfigError, match="names a whole section"):
        load_config(TRAIN_CONFIGS[0], ["method.ema=1"])


@pytest.mark.parametrize(("override", "message"), [
    ("optim.max_iter=ten", r"optim\.max_iter must be an integer, got 'ten'"),
    ("optim.max_iter=1.5", r"optim\.max_iter must be an integer"),
    ("data.batch_size=true", r"data\.batch_size must be an integer, got True"),
    ("method.ema.include_unet=yes please", r"ema\.include_unet must be true/false"),
    ("data.crop_hw=[512]", r"data\.crop_hw must be a list of 2 values"),
    ("method.model.finetune=half", r"model\.finetune must be one of 'full', 'lora'"),
    ("method.dplg.k0_choices=[60, x]", r"dplg\.k0_choices\[1\] must be an integer"),
    ("method.ipkl.prompt_texts=[a]", r"ipkl\.prompt_texts must be a mapping of text to text"),
    ("method.ipkl.prompt_texts={car: 3}", r"ipkl\.prompt_texts\.car must be text, got 3"),
])
def test_values_of_the_wrong_type_are_refused_naming_key_and_type(override: str, message: str):
    path = REPO / "config" / "train" / "synthetic_event_diff_tiny.yaml" if "ipkl" in override else TRAIN_CONFIGS[0]
    with pytest.raises(ConfigError, match=message):
        load_config(path, [override])


def test_a_mapping_field_reads_from_yaml_and_set(tmp_path: Path):
    path = write(tmp_path, {"task": "events", "method": {"name": "diff", "ipkl": {"prompt_texts": {"car": "a car"}}}})
    assert load_config(path).method.ipkl.prompt_texts == {"car": "a car"}
    assert load_config(path, ["method.ipkl.prompt_texts={road: a road}"]).method.ipkl.prompt_texts == {"road": "a road"}


@pytest.mark.parametrize(("overrides", "message"), [
    (["method.model.finetune=lora", "method.model.lora_rank=0"],
     r"method\.model\.lora_rank must be ≥ 1 with method\.model\.finetune=lora"),
    (["method.dplg.k0_choices=[1000]"], r"dplg\.k0_choices must lie in 0\.\.999"),
    (["data.crop_hw=[800, 512]"], r"data\.crop_hw \[800, 512\] is larger than data\.source_resize_hw"),
    (["run.device=cpu"], r"run\.amp with float16 needs a CUDA device"),
    (["method.ema.alpha=1.0"], r"ema\.alpha must lie in \[0, 1\)"),
    (["method.pseudo_labels.threshold=1.5"], r"pseudo_labels\.threshold must lie in"),
    (["optim.milestone_fractions=[0.9, 0.5]"], r"optim\.milestone_fractions must increase"),
    (["method.model.finetune=lora", "method.ema.include_unet=true"], r"method\.ema\.include_unet=true averages UNet weights"),
    (["data.source_modality=events"], r"data\.source_modality must be rgb or data\.modality \(depth\), got 'events'"),
    (["data.source_modality=depth"], r"data\.source_modality=depth needs data\.source_kind=folder .*cityscapes holds RGB only"),
])
def test_impossible_values_and_combinations_are_refused(overrides: list[str], message: str):
    with pytest.raises(ConfigError, match=message):
        load_config(TRAIN_CONFIGS[0], overrides)


def test_a_yaml_without_task_or_with_an_unknown_task_is_refused(tmp_path: Path):
    with pytest.raises(ConfigError, match="has no 'task' key"):
        load_config(write(tmp_path, {"optim": {"lr": 1e-5}}))
    with pytest.raises(ConfigError, match="task must be one of depth, infrared, events, rgb, got 'radar'"):
        load_config(write(tmp_path, {"task": "radar"}))
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(write(tmp_path, {"task": "depth", "optim": 3}))


def test_the_resolved_config_is_saved_as_yaml_and_json_and_reads_back_equal(tmp_path: Path):
    config = load_config(TRAIN_CONFIGS[0], ["optim.lr=1e-5", "run.resume=latest"])
    yaml_path, json_path = save_config(config, tmp_path / "run")
    assert config_from_dict(yaml.safe_load(yaml_path.read_text())) == config
    assert config_from_dict(json.loads(json_path.read_text())) == config
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["config.json", "config.yaml"]  # no temp files


def test_missing_data_roots_are_reported_with_the_key_to_set(tmp_path: Path):
    config = load_config(TRAIN_CONFIGS[0], [f"data.source_root={tmp_path}", "data.target_root=/nonexistent/DELIVER"])
    message = r"data\.target_root = '/nonexistent/DELIVER' does not exist.*--set data\.target_root=PATH"
    with pytest.raises(ConfigError, match=message):
        check_data_paths(config)
    check_data_paths(load_config(TRAIN_CONFIGS[0], [f"data.source_root={tmp_path}", f"data.target_root={tmp_path}"]))
