"""Stable Diffusion from one checkpoint file: bundled configs, fixed empty-prompt tokens, safe .ckpt reading.

Weights are the tiny preset's (real diffusers/transformers classes, random values); the bundled
SD-size configs are checked on the meta device, where building them allocates nothing.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
import types
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from madm_ros.errors import ConfigError  # noqa: E402
from madm_train.models import stable_diffusion  # noqa: E402
from madm_train.models.sd_backbone import SDBackbone  # noqa: E402
from madm_train.models.stable_diffusion import (  # noqa: E402
    CONFIG_FILES,
    build_sd_modules,
    bundled_config_dir,
    detect_version,
    empty_prompt_ids,
)
from madm_train.models.tiny_sd import (  # noqa: E402
    TINY_BACKBONE_OPTIONS,
    write_single_file,
)

TINY = {"input_size": None, **TINY_BACKBONE_OPTIONS}


@pytest.fixture(scope="module")
def tiny_file(tiny_sd: Path) -> Path:
    return write_single_file(tiny_sd, tiny_sd.parent / "tiny-sd.safetensors")


@pytest.fixture(scope="module")
def folder_backbone(tiny_sd: Path) -> SDBackbone:
    return SDBackbone.from_pretrained(tiny_sd, **TINY).eval()


def configs_only(tiny_sd: Path, target: Path) -> Path:
    """The tiny folder's configs in the bundled layout: no weights, no tokenizer."""
    for name in CONFIG_FILES:
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(tiny_sd / name, target / name)
    return target


def same_sd(a: SDBackbone, b: SDBackbone) -> None:
    for part in ("unet", "vae"):
        left, right = getattr(a, part).state_dict(), getattr(b, part).state_dict()
        assert left.keys() == right.keys()
        assert all(torch.equal(left[k], right[k]) for k in left), part
    assert torch.equal(a.prompt.empty_prompt, b.prompt.empty_prompt)
    assert a.scheduler.config.num_train_timesteps == b.scheduler.config.num_train_timesteps
    assert torch.equal(a.scheduler.alphas_cumprod, b.scheduler.alphas_cumprod)


def sd_outputs(backbone: SDBackbone, other: SDBackbone) -> tuple[torch.Tensor, torch.Tensor]:
    """UNet outputs of two backbones whose learned parts (prompt, projections) are made equal."""
    other.prompt.load_state_dict(backbone.prompt.state_dict())
    other.projections.load_state_dict(backbone.projections.state_dict())
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return backbone.eval()(x).unet_output, other.eval()(x).unet_output


# -- a single file alone --------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
def test_a_single_file_alone_loads_to_the_backbone_of_the_folder_it_came_from(
    tiny_sd: Path, tiny_file: Path, folder_backbone: SDBackbone, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    suffix: str,
) -> None:
    """No config_dir, no tokenizer: the version is detected and its bundled configs are used.

    The bundled configs are SD-sized, so the tiny preset's configs stand in for them here (the
    package's folder is swapped for one that holds them as ``v1/``); everything else is the real path.
    """
    file = tiny_file
    if suffix == ".ckpt":  # the original form: a pickled {"state_dict": ...}, read with weights_only=True
        from safetensors.torch import load_file

        file = tmp_path / "tiny-sd.ckpt"
        torch.save({"state_dict": load_file(str(tiny_file)), "global_step": 470000}, file)
    configs_only(tiny_sd, tmp_path / "bundled" / "v1")
    monkeypatch.setattr(stable_diffusion, "CONFIGS_DIR", tmp_path / "bundled")
    single = SDBackbone.from_pretrained(file, **TINY)
    same_sd(folder_backbone, single)
    a, b = sd_outputs(folder_backbone, single)
    # bit-identical weights; the file's tensors sit at other memory alignments, which can change the
    # CPU kernels' summation order in the last bit
    assert torch.allclose(a, b, rtol=0, atol=1e-5)


def test_config_dir_describes_a_file_of_another_architecture(
    tiny_sd: Path, tiny_file: Path, folder_backbone: SDBackbone, tmp_path: Path
) -> None:
    single = SDBackbone.from_pretrained(tiny_file, config_dir=configs_only(tiny_sd, tmp_path / "tiny-configs"), **TINY)
    same_sd(folder_backbone, single)


def test_without_config_dir_a_tiny_file_is_checked_against_the_bundled_sd_v1_configs(tiny_file: Path) -> None:
    fits = r"UNet weights of .*tiny-sd.safetensors do not fit the bundled SD v1 configs: conv_in.weight is \(32, 4, 3, 3\)"
    with pytest.raises(ConfigError, match=fits + r".*pass sd_version=.*config_dir="):
        SDBackbone.from_pretrained(tiny_file, **TINY)


def test_sd2_file_conditions_on_the_penultimate_text_layer_padded_with_exclamation_marks(
    tiny_sd: Path, tmp_path: Path
) -> None:
    """SD 2.x layout (OpenCLIP keys): configs with one text layer fewer than the file holds, pad id 0.

    The reference is SD 2's FrozenOpenCLIPEmbedder(layer="penultimate"): all but the last layer,
    then the final layer norm, on ``[BOS, EOS, 0, 0, ...]``.
    """
    from transformers import CLIPTextModel

    file = write_single_file(tiny_sd, tmp_path / "tiny-sd2.safetensors", text_encoder_layout="open_clip")
    configs = configs_only(tiny_sd, tmp_path / "configs")
    text_config = json.loads((configs / "text_encoder/config.json").read_text())
    text_config["num_hidden_layers"] -= 1
    (configs / "text_encoder/config.json").write_text(json.dumps(text_config))
    tokens = json.loads((configs / "empty_prompt_tokens.json").read_text())
    (configs / "empty_prompt_tokens.json").write_text(json.dumps({**tokens, "pad_token_id": 0}))

    loaded = SDBackbone.from_pretrained(file, config_dir=configs, **TINY)
    encoder = CLIPTextModel.from_pretrained(tiny_sd / "text_encoder").eval()
    ids = torch.tensor([[tokens["bos_token_id"], tokens["eos_token_id"]] + [0] * 75])
    with torch.no_grad():
        hidden = encoder(ids, output_hidden_states=True).hidden_states
        expected = getattr(encoder, "text_model", encoder).final_layer_norm(hidden[-2])
        last_layer = getattr(encoder, "text_model", encoder).final_layer_norm(hidden[-1])
    assert torch.allclose(loaded.prompt.empty_prompt, expected, atol=1e-6)
    assert not torch.allclose(loaded.prompt.empty_prompt, last_layer, atol=1e-3)


def test_files_with_ema_weights_load_the_ema_weights(tiny_sd: Path, tiny_file: Path, tmp_path: Path) -> None:
    """As the published diffusers folders do; the training copy (model.diffusion_model.*) is left."""
    from safetensors.torch import load_file, save_file

    state = load_file(str(tiny_file))
    unet = {k: v for k, v in state.items() if k.startswith("model.diffusion_model.")}
    ema = {"model_ema." + "".join(k.split(".")[1:]): v + 1 for k, v in unet.items()}  # LDM's flattened EMA names
    save_file({**state, **ema}, str(tmp_path / "full-ema.safetensors"))
    configs = configs_only(tiny_sd, tmp_path / "configs")
    plain = SDBackbone.from_pretrained(tiny_file, config_dir=configs, **TINY)
    with_ema = SDBackbone.from_pretrained(tmp_path / "full-ema.safetensors", config_dir=configs, **TINY)
    assert torch.equal(with_ema.unet.conv_in.weight, plain.unet.conv_in.weight + 1)


# -- the empty prompt without a tokenizer ---------------------------------------------------------


def test_bundled_empty_prompt_tokens_are_clip_start_end_and_the_versions_padding() -> None:
    """SD 1.x pads with <|endoftext|> (49407), SD 2.x with "!" (0); sources in the stable_diffusion docstring."""
    expected = {"v1": [49406, 49407] + [49407] * 75, "v2": [49406, 49407] + [0] * 75, "v2-base": [49406, 49407] + [0] * 75}
    for version, ids in expected.items():
        tokens = json.loads((bundled_config_dir(version) / "empty_prompt_tokens.json").read_text())
        assert empty_prompt_ids(**tokens).tolist() == [ids], version


@pytest.mark.parametrize("pad_token", ["<|endoftext|>", "!"])
def test_fixed_ids_are_what_a_clip_tokenizer_gives_for_the_empty_prompt(tiny_sd: Path, pad_token: str) -> None:
    """The tiny vocabulary has CLIP's order (byte symbols first, "!" = 0; the special tokens last)."""
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(tiny_sd / "tokenizer", pad_token=pad_token)
    ids = tokenizer("", padding="max_length", max_length=77, return_tensors="pt").input_ids
    assert tokenizer.convert_tokens_to_ids("!") == 0
    fixed = empty_prompt_ids(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                             pad_token_id=tokenizer.pad_token_id, model_max_length=77)  # fmt: skip
    assert torch.equal(fixed, ids)


# -- version detection ----------------------------------------------------------------------------

CROSS_ATTENTION = "model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight"
CLIP = "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight"
OPEN_CLIP = "cond_stage_model.model.token_embedding.weight"


def keys(**shapes: tuple[int, ...]) -> dict[str, torch.Tensor]:
    names = {"cross": CROSS_ATTENTION, "clip": CLIP, "open_clip": OPEN_CLIP,
             "conv_in": "model.diffusion_model.input_blocks.0.0.weight",
             "sdxl": "conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias"}  # fmt: skip
    return {names[name]: torch.empty(shape, device="meta") for name, shape in shapes.items()}


def test_version_is_read_off_the_text_encoder_keys_and_the_cross_attention_width() -> None:
    assert detect_version(keys(cross=(320, 768), clip=(77, 768), conv_in=(320, 4, 3, 3))) == "v1"
    assert detect_version(keys(cross=(320, 1024), open_clip=(49408, 1024), conv_in=(320, 4, 3, 3))) == "v2"
    assert detect_version(keys(cross=(320, 1024), open_clip=(49408, 1024)), global_step=875000) == "v2-base"
    with pytest.raises(ConfigError, match=r"'inpainting'.*pass sd_version="):
        detect_version(keys(cross=(320, 768), clip=(77, 768), conv_in=(320, 9, 3, 3)))
    with pytest.raises(ConfigError, match=r"'xl_base'"):
        detect_version(keys(cross=(320, 2048), sdxl=(1280,)))
    with pytest.raises(ConfigError, match=r"'v1' \(text encoder: OpenCLIP\)"):
        detect_version(keys(cross=(320, 768), open_clip=(49408, 1024)))


# -- the bundled configs at real size -------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "unet", "text", "layers", "prediction"),
    [("v1", 859_520_964, 123_060_480, 12, "epsilon"),
     ("v2", 865_910_724, 340_387_840, 23, "v_prediction"),
     ("v2-base", 865_910_724, 340_387_840, 23, "epsilon")],
)  # fmt: skip
def test_bundled_configs_build_the_published_architectures(
    version: str, unet: int, text: int, layers: int, prediction: str
) -> None:
    """SD-1.4: UNet 859.5 M, VAE 83.7 M, CLIP ViT-L text 123.1 M; SD-2.1: UNet 865.9 M, OpenCLIP-H text (23 layers) 340.4 M."""
    with torch.device("meta"):
        modules = build_sd_modules(bundled_config_dir(version))
    count = {name: sum(p.numel() for p in getattr(modules, name).parameters()) for name in ("unet", "vae", "text_encoder")}
    assert count == {"unet": unet, "vae": 83_653_863, "text_encoder": text}
    assert modules.text_encoder.config.num_hidden_layers == layers
    assert modules.unet.config.cross_attention_dim == (768 if version == "v1" else 1024)
    assert modules.unet.config.use_linear_projection == (version != "v1")
    assert modules.scheduler.config.prediction_type == prediction
    assert (modules.scheduler.config.beta_start, modules.scheduler.config.beta_end) == (0.00085, 0.012)


# -- pickled .ckpt files --------------------------------------------------------------------------


class ModelCheckpoint:
    """Stands in for pytorch_lightning's callback: unpickling it runs code (it touches ``marker``)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __setstate__(self, state: dict) -> None:
        Path(state["marker"]).touch()
        self.__dict__.update(state)


class ShellCommand:
    """Pickles as os.system("touch <marker>"): the classic malicious pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


@pytest.fixture
def lightning_ckpt(tiny_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A Lightning-era .ckpt of the tiny SD: state_dict plus a pickled callback and an os.system object.

    The callback's module is importable for the whole test, so nothing but the reader stops its code.
    """
    from safetensors.torch import load_file

    name = "pytorch_lightning.callbacks.model_checkpoint"
    for prefix in ("pytorch_lightning", "pytorch_lightning.callbacks", name):
        monkeypatch.setitem(sys.modules, prefix, types.ModuleType(prefix))
    monkeypatch.setattr(ModelCheckpoint, "__module__", name)
    sys.modules[name].ModelCheckpoint = ModelCheckpoint
    marker = tmp_path / "code-ran"
    ckpt = tmp_path / "lightning.ckpt"
    torch.save({"state_dict": load_file(str(tiny_file)), "global_step": 470000, "pytorch-lightning_version": "1.4.2",
                "callbacks": {ModelCheckpoint: {"best_model_score": None}}, "loops": [ModelCheckpoint(marker)],
                "hyper_parameters": ShellCommand(marker)}, ckpt)  # fmt: skip
    torch.load(ckpt, weights_only=False)  # armed: a plain unpickle runs the file's code
    assert marker.exists()
    marker.unlink()
    return ckpt, marker


def test_a_ckpt_with_pickled_objects_is_refused_naming_the_object_and_the_fix(
    lightning_ckpt: tuple[Path, Path], tiny_sd: Path, tmp_path: Path
) -> None:
    ckpt, marker = lightning_ckpt
    with pytest.raises(ConfigError) as error:
        SDBackbone.from_pretrained(ckpt, config_dir=configs_only(tiny_sd, tmp_path / "configs"), **TINY)
    message = str(error.value)
    assert "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint" in message
    assert f"python -m madm_train convert-checkpoint {ckpt} --out {ckpt.with_suffix('.safetensors')}" in message
    assert not marker.exists()


def test_convert_checkpoint_keeps_the_tensors_and_runs_nothing_from_the_file(
    lightning_ckpt: tuple[Path, Path], tiny_sd: Path, tiny_file: Path, folder_backbone: SDBackbone, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Through the command's own functions (``python -m madm_train convert-checkpoint``), then loaded."""
    from safetensors.torch import load_file

    from madm_train.cli import main

    ckpt, marker = lightning_ckpt
    assert main(["convert-checkpoint", str(ckpt)]) == 0
    out = ckpt.with_suffix(".safetensors")
    assert not marker.exists()
    expected, converted = load_file(str(tiny_file)), load_file(str(out))
    assert converted.keys() == expected.keys() and all(torch.equal(converted[k], expected[k]) for k in expected)
    report = capsys.readouterr().err
    assert f"wrote {out}" in report and "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint" in report
    assert "posix.system" in report or "nt.system" in report
    loaded = SDBackbone.from_pretrained(out, config_dir=configs_only(tiny_sd, tmp_path / "configs"), **TINY)
    same_sd(folder_backbone, loaded)


def test_convert_checkpoint_refuses_what_it_cannot_write(lightning_ckpt: tuple[Path, Path], tmp_path: Path) -> None:
    ckpt, _ = lightning_ckpt
    with pytest.raises(ConfigError, match=r"must end in \.safetensors"):
        stable_diffusion.convert_checkpoint(ckpt, tmp_path / "out.ckpt")
    with pytest.raises(ConfigError, match=r"not found"):
        stable_diffusion.convert_checkpoint(tmp_path / "nope.ckpt", tmp_path / "out.safetensors")
    empty = tmp_path / "empty.ckpt"
    torch.save({"state_dict": {"note": "no tensors"}}, empty)
    with pytest.raises(ConfigError, match=r"holds no tensors"):
        stable_diffusion.convert_checkpoint(empty, tmp_path / "out.safetensors")
    assert not (tmp_path / "out.safetensors").exists()


# -- other errors ---------------------------------------------------------------------------------


def test_wrong_files_and_incomplete_checkpoints_are_errors_saying_what_is_wrong(
    tiny_sd: Path, tiny_file: Path, tmp_path: Path
) -> None:
    from safetensors.torch import load_file, save_file

    text = tmp_path / "weights.txt"
    text.write_text("not weights")
    with pytest.raises(ConfigError, match=r"weights.txt is not a Stable Diffusion checkpoint"):
        SDBackbone.from_pretrained(text)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(ConfigError, match=r"could not read checkpoint .*garbage.safetensors"):
        SDBackbone.from_pretrained(garbage)
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(b"\x80\x02garbage")  # a broken pickle is not mistaken for one with objects in it
    with pytest.raises(ConfigError, match=r"could not read checkpoint .*broken.ckpt") as error:
        SDBackbone.from_pretrained(broken)
    assert "convert-checkpoint" not in str(error.value)
    state = load_file(str(tiny_file))
    vae_only = tmp_path / "vae-only.safetensors"
    save_file({k: v for k, v in state.items() if k.startswith("first_stage_model.")}, str(vae_only))
    with pytest.raises(ConfigError, match=r"lacks the UNet .* CLIP text encoder"):
        SDBackbone.from_pretrained(vae_only)
    configs = configs_only(tiny_sd, tmp_path / "configs")
    partial = tmp_path / "partial.safetensors"
    save_file({k: v for k, v in state.items() if k != "model.diffusion_model.out.2.weight"}, str(partial))
    with pytest.raises(ConfigError, match=r"partial.safetensors lacks 1 UNet weights .*conv_out.weight"):
        SDBackbone.from_pretrained(partial, config_dir=configs)


def test_version_and_config_options_are_checked(tiny_sd: Path, tiny_file: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown Stable Diffusion version 'v3'.*'v1', 'v2', 'v2-base'"):
        SDBackbone.from_pretrained(tiny_file, sd_version="v3")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"only for single-file checkpoints"):
        SDBackbone.from_pretrained(tiny_sd, sd_version="v1")
    with pytest.raises(ConfigError, match=r"not both"):
        SDBackbone.from_pretrained(tiny_file, sd_version="v1", config_dir=tiny_sd)
    (tmp_path / "half" / "unet").mkdir(parents=True)
    shutil.copy(tiny_sd / "unet/config.json", tmp_path / "half/unet/config.json")
    with pytest.raises(ConfigError, match=r"lacks vae/config.json, text_encoder/config.json, .*empty_prompt_tokens.json"):
        SDBackbone.from_pretrained(tiny_file, config_dir=tmp_path / "half")
    configs = configs_only(tiny_sd, tmp_path / "configs")
    (configs / "empty_prompt_tokens.json").write_text('{"bos_token_id": 512}')
    with pytest.raises(ConfigError, match=r"empty_prompt_tokens.json must be a JSON object with integer"):
        SDBackbone.from_pretrained(tiny_file, config_dir=configs)


def test_loaded_weights_sit_in_aligned_memory_so_results_do_not_depend_on_the_files_layout(tiny_sd: Path) -> None:
    from diffusers import UNet2DConditionModel

    from madm_train.models.owned_memory import ALIGNMENT, own_memory
    from madm_train.models.stable_diffusion import load_stable_diffusion

    mapped = UNet2DConditionModel.from_pretrained(tiny_sd / "unet", local_files_only=True)  # where the file puts them
    offsets = {p.data_ptr() % ALIGNMENT for p in mapped.parameters()}
    loaded = load_stable_diffusion(tiny_sd)
    assert {p.data_ptr() % ALIGNMENT for m in (loaded.unet, loaded.vae) for p in m.parameters()} == {0}
    latents, t = torch.randn(1, 4, 8, 8), torch.tensor([10])
    with torch.no_grad():
        before = mapped(latents, t, encoder_hidden_states=loaded.empty_prompt).sample
        parameters = dict(mapped.named_parameters())
        own_memory(mapped)
        after = mapped(latents, t, encoder_hidden_states=loaded.empty_prompt).sample
        reference = loaded.unet(latents, t, encoder_hidden_states=loaded.empty_prompt).sample
    assert all(parameters[name] is p for name, p in mapped.named_parameters())  # the same Parameter objects
    assert {p.data_ptr() % ALIGNMENT for p in mapped.parameters()} == {0}
    assert torch.equal(after, reference)  # aligned copies of the same weights: bit for bit
    if offsets != {0}:  # the mapped file put them off the boundary: kernels may round differently there
        assert torch.allclose(before, reference, atol=1e-5)
