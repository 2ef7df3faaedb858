"""DIFF's class prompts: the released sentences as data, prompt sets of our label sets, embeddings computed once.

The text encoder is the tiny preset's (real ``CLIPTextModel``/``CLIPTokenizer``, random weights, a
byte-level vocabulary: one token per character, so only the shorter released sentences fit its 77
tokens — the five active ones do).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from madm_ros.errors import ConfigError  # noqa: E402
from madm_ros.palettes import CITYSCAPES_19, get_label_set  # noqa: E402
from madm_train.methods.diff import prompts as prompts_module  # noqa: E402
from madm_train.methods.diff.prompts import (  # noqa: E402
    DIFF_ACTIVE_CLASSES,
    DIFF_CITYSCAPES_PROMPTS,
    DIFF_PROMPT_PREFIX,
    MERGED_PROMPTS,
    PromptEmbeddings,
    class_prompts,
)
from madm_train.models.stable_diffusion import (  # noqa: E402
    CONFIG_FILES,
    load_stable_diffusion,
    load_text_encoder,
)
from madm_train.models.tiny_sd import write_single_file  # noqa: E402

RELEASED = {
    1: "A high quality photo; europe city; sidewalk, Paths for pedestrian use",
    3: "A high quality photo; europe city; wall, Outer walls of buildings or structures",
    12: "A high quality photo; europe city; rider, People riding bicycles, motorcycles",
    14: "A high quality photo; europe city; truck, Larger vehicles used for cargo transport",
    16: "A high quality photo; europe city; train, Vehicles on railway tracks",
}
"""Yux1angJi/DIFF@55595fb diff_config.yaml l.61, 63, 72, 74, 76: the uncommented label_map entries."""


@pytest.fixture(scope="module")
def tiny_file(tiny_sd: Path) -> Path:
    return write_single_file(tiny_sd, tiny_sd.parent / "tiny-sd-prompts.safetensors")


@pytest.fixture(scope="module")
def empty(tiny_sd: Path) -> torch.Tensor:
    return load_stable_diffusion(tiny_sd).empty_prompt


def tokenizer_padding_with(tiny_sd: Path, pad_token: str, folder: Path) -> Path:
    from transformers import CLIPTokenizer

    CLIPTokenizer.from_pretrained(tiny_sd / "tokenizer", pad_token=pad_token).save_pretrained(folder)
    return folder


def fresh_pass(tiny_sd: Path, texts: list[str], *, penultimate: bool = False, pad_token: str = "<|endoftext|>"
               ) -> torch.Tensor:  # fmt: skip
    """The tiny folder's text encoder on each text padded to 77 tokens, written out here (the reference)."""
    from transformers import CLIPTextModel, CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(tiny_sd / "tokenizer", pad_token=pad_token)
    encoder = CLIPTextModel.from_pretrained(tiny_sd / "text_encoder").eval()
    rows = []
    with torch.no_grad():
        for text in texts:
            ids = tokenizer(text, padding="max_length", max_length=77, return_tensors="pt").input_ids
            if penultimate:  # SD 2.x: all layers but the last, then the final layer norm
                hidden = encoder(ids, output_hidden_states=True).hidden_states[-2]
                rows.append(getattr(encoder, "text_model", encoder).final_layer_norm(hidden))
            else:
                rows.append(encoder(ids).last_hidden_state)
    return torch.cat(rows)


# -- the released prompt set and our label sets ---------------------------------------------------


def test_released_prompt_set_is_diffs_label_map_with_its_five_active_classes() -> None:
    assert DIFF_ACTIVE_CLASSES == ("sidewalk", "wall", "rider", "truck", "train")
    assert class_prompts("cityscapes19") == RELEASED
    assert class_prompts("cityscapes19", active="released") == RELEASED
    assert list(DIFF_CITYSCAPES_PROMPTS) == list(CITYSCAPES_19.class_names)
    for name, text in DIFF_CITYSCAPES_PROMPTS.items():
        assert text.startswith(f"{DIFF_PROMPT_PREFIX}{name}, "), name
    every = class_prompts("cityscapes19", active="all")
    assert every == {i: DIFF_CITYSCAPES_PROMPTS[name] for i, name in enumerate(CITYSCAPES_19.class_names)}
    assert every[13] == ("A high quality photo; europe city; car, All types of four-wheeled vehicles, including "
                         "sedans, trucks, buses")  # fmt: skip


@pytest.mark.parametrize("label_set", ["cityscapes19", "dsec11", "fmb9"])
@pytest.mark.parametrize("active", ["released", "all"])
def test_every_prompt_class_id_is_a_class_of_its_label_set_named_in_its_prompt(label_set: str, active: str) -> None:
    names = get_label_set(label_set).class_names
    prompts = class_prompts(label_set, active=active)
    assert list(prompts) == sorted(prompts)
    assert set(prompts) <= set(range(len(names)))
    if active == "all":
        assert set(prompts) == set(range(len(names)))
    for class_id, text in prompts.items():
        assert text.startswith(f"{DIFF_PROMPT_PREFIX}{names[class_id]}, "), (class_id, text)


def test_merged_label_sets_condition_every_class_that_holds_a_released_one() -> None:
    """rider → person, truck/train → car; DSEC-11 keeps wall, FMB-9 has none."""
    dsec, fmb = get_label_set("dsec11").class_names, get_label_set("fmb9").class_names
    released_dsec = class_prompts("dsec11")
    assert {dsec[i] for i in released_dsec} == {"sidewalk", "wall", "person", "car"}
    assert {fmb[i] for i in class_prompts("fmb9")} == {"sidewalk", "person", "car"}
    assert released_dsec[dsec.index("sidewalk")] == RELEASED[1]  # one Cityscapes class: its sentence, verbatim
    assert released_dsec[dsec.index("person")] == MERGED_PROMPTS[("person", "rider")]
    assert released_dsec[dsec.index("car")] == MERGED_PROMPTS[("car", "truck", "bus", "train", "motorcycle", "bicycle")]
    used = {text for label_set in ("dsec11", "fmb9") for text in class_prompts(label_set, active="all").values()}
    assert set(MERGED_PROMPTS.values()) <= used  # every merged sentence belongs to a class that exists


def test_overrides_replace_sentences_and_mistakes_are_refused() -> None:
    wall = "A high quality photo; europe city; wall, Concrete"
    assert class_prompts("dsec11", overrides={"wall": wall})[9] == wall
    assert class_prompts("cityscapes19", active=["road", "sky"]) == {0: DIFF_CITYSCAPES_PROMPTS["road"],
                                                                     10: DIFF_CITYSCAPES_PROMPTS["sky"]}  # fmt: skip
    with pytest.raises(ConfigError, match=r"\['rider'\], which are not classes of dsec11"):
        class_prompts("dsec11", overrides={"rider": "x"})
    with pytest.raises(ConfigError, match=r"overrides for \['road'\] would never be used"):
        class_prompts("dsec11", overrides={"road": "x"})
    with pytest.raises(ConfigError, match="are empty"):
        class_prompts("dsec11", overrides={"wall": " "})
    with pytest.raises(ConfigError, match=r"\['rider'\] are not classes of fmb9"):
        class_prompts("fmb9", active=["rider"])
    with pytest.raises(ConfigError, match=r"'paper' is unknown; use one of \['released', 'all'\]"):
        class_prompts("fmb9", active="paper")
    with pytest.raises(ConfigError, match="no class of fmb9 is active"):
        class_prompts("fmb9", active=[])


# -- embeddings -----------------------------------------------------------------------------------


def test_cached_embeddings_equal_a_fresh_text_encoder_pass_bit_for_bit(
    tiny_sd: Path, empty: torch.Tensor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "prompts.safetensors"
    computed = PromptEmbeddings.from_pretrained(tiny_sd, RELEASED, empty_prompt=empty, cache=cache)
    expected = fresh_pass(tiny_sd, list(RELEASED.values()))
    assert computed.class_ids == (1, 3, 12, 14, 16)
    assert computed.texts == tuple(RELEASED.values())
    assert computed.embeddings.shape == (5, 77, 32) and computed.embeddings.dtype == torch.float32
    assert torch.equal(computed.embeddings, expected)
    assert torch.equal(computed.empty, empty)

    def no_text_encoder(*args: object, **kwargs: object) -> None:
        raise AssertionError("a valid cache must not load the text encoder")

    monkeypatch.setattr(prompts_module, "load_text_encoder", no_text_encoder)
    cached = PromptEmbeddings.from_pretrained(tiny_sd, RELEASED, empty_prompt=empty, cache=cache)
    assert torch.equal(cached.embeddings, expected)
    assert torch.equal(cached.empty, empty)
    assert cached.prompts == RELEASED


def test_saved_file_is_keyed_by_class_id_with_the_texts_and_hash_in_its_metadata(
    tiny_sd: Path, empty: torch.Tensor, tmp_path: Path
) -> None:
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    embeddings = PromptEmbeddings.from_pretrained(tiny_sd, RELEASED, empty_prompt=empty)
    file = embeddings.save(tmp_path / "sub" / "prompts.safetensors")
    with safe_open(str(file), framework="pt") as opened:
        metadata = opened.metadata()
        assert set(opened.keys()) == {"class_1", "class_3", "class_12", "class_14", "class_16", "empty"}
        assert torch.equal(opened.get_tensor("class_12"), embeddings.embeddings[2])
    assert json.loads(metadata["prompts"]) == {str(i): text for i, text in RELEASED.items()}
    assert metadata["empty_sha256"] == embeddings.empty_sha256
    assert len(embeddings.empty_sha256) == 64

    tensors = load_file(str(file))
    tensors["empty"] = tensors["empty"] + 1e-3
    save_file(tensors, str(tmp_path / "damaged.safetensors"), metadata=metadata)
    with pytest.raises(ConfigError, match="does not match its empty_sha256; the file is damaged"):
        PromptEmbeddings.load(tmp_path / "damaged.safetensors")
    save_file(tensors, str(tmp_path / "other.safetensors"))
    with pytest.raises(ConfigError, match="is not a prompt embedding file"):
        PromptEmbeddings.load(tmp_path / "other.safetensors")


def test_a_cache_of_other_texts_or_another_model_is_refused_and_computed_again(
    tiny_sd: Path, empty: torch.Tensor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "prompts.safetensors"
    PromptEmbeddings.from_pretrained(tiny_sd, RELEASED, empty_prompt=empty, cache=cache)
    changed = {**RELEASED, 3: "A high quality photo; europe city; wall, Concrete"}
    with pytest.raises(ConfigError, match=r"other texts \(class ids \[3\] differ"):
        PromptEmbeddings.load(cache).check(changed, empty)
    other_model = empty.clone()
    other_model[0, 5, 0] += 1.0
    with pytest.raises(ConfigError, match="computed for another text encoder"):
        PromptEmbeddings.load(cache).check(RELEASED, other_model)

    loads = []
    real = prompts_module.load_text_encoder
    monkeypatch.setattr(prompts_module, "load_text_encoder", lambda *a, **k: loads.append(a) or real(*a, **k))
    recomputed = PromptEmbeddings.from_pretrained(tiny_sd, changed, empty_prompt=empty, cache=cache)
    assert len(loads) == 1
    assert torch.equal(recomputed.embeddings, fresh_pass(tiny_sd, list(changed.values())))
    assert PromptEmbeddings.load(cache).prompts == changed  # the cache now holds the new texts
    with pytest.raises(ConfigError, match="differing from the backbone's .* not the same model"):
        PromptEmbeddings.from_pretrained(tiny_sd, changed, empty_prompt=other_model, cache=cache)
    assert len(loads) == 2


@pytest.mark.parametrize("layout", ["clip", "open_clip"])
def test_the_empty_entry_is_the_backbones_empty_prompt_from_a_folder_and_a_single_file(
    tiny_sd: Path, tiny_file: Path, empty: torch.Tensor, tmp_path: Path, layout: str
) -> None:
    """Single files with a tokenizer folder; SD 2.x's layout conditions on the penultimate layer, padded with "!"."""
    from_folder = PromptEmbeddings.compute(*load_text_encoder(tiny_sd), RELEASED)
    assert torch.equal(from_folder.empty, empty)
    if layout == "clip":
        file, configs, pad = tiny_file, tiny_sd, "<|endoftext|>"
    else:
        file = write_single_file(tiny_sd, tmp_path / "tiny-sd2.safetensors", text_encoder_layout="open_clip")
        configs, pad = tmp_path / "configs", "!"
        for name in CONFIG_FILES:
            (configs / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(tiny_sd / name, configs / name)
        text = json.loads((configs / "text_encoder/config.json").read_text())
        (configs / "text_encoder/config.json").write_text(
            json.dumps({**text, "num_hidden_layers": text["num_hidden_layers"] - 1})
        )
        tokens = json.loads((configs / "empty_prompt_tokens.json").read_text())
        (configs / "empty_prompt_tokens.json").write_text(json.dumps({**tokens, "pad_token_id": 0}))
    tokenizer = tokenizer_padding_with(tiny_sd, pad, tmp_path / "tokenizer")
    from_file = PromptEmbeddings.compute(*load_text_encoder(file, config_dir=configs, tokenizer=tokenizer), RELEASED)
    assert torch.equal(from_file.empty, load_stable_diffusion(file, config_dir=configs).empty_prompt)
    expected = fresh_pass(tiny_sd, list(RELEASED.values()), penultimate=layout == "open_clip", pad_token=pad)
    if layout == "clip":
        assert torch.equal(from_file.embeddings, from_folder.embeddings)
        assert torch.equal(from_file.embeddings, expected)
    else:  # another weight layout and layer count: the same values up to float rounding
        assert torch.allclose(from_file.embeddings, expected, atol=1e-5)
        assert not torch.allclose(from_file.embeddings, from_folder.embeddings, atol=1e-3)


def test_a_single_file_without_tokenizer_is_refused_saying_what_to_pass(
    tiny_sd: Path, tiny_file: Path, empty: torch.Tensor
) -> None:
    message = r"holds no tokenizer, and the conditional branch needs the tokenizer of the text encoder.*pass tokenizer="
    with pytest.raises(ConfigError, match=message):
        load_text_encoder(tiny_file, config_dir=tiny_sd)
    with pytest.raises(ConfigError, match=message):
        PromptEmbeddings.from_pretrained(tiny_file, RELEASED, empty_prompt=empty, config_dir=tiny_sd)


def test_wrong_text_sources_are_refused_naming_the_problem(tiny_sd: Path, tiny_file: Path, tmp_path: Path) -> None:
    sd2_tokenizer = tokenizer_padding_with(tiny_sd, "!", tmp_path / "sd2-tokenizer")
    with pytest.raises(ConfigError, match=r'turns "" into .* it is the tokenizer of another model'):
        load_text_encoder(tiny_file, config_dir=tiny_sd, tokenizer=sd2_tokenizer)
    (tmp_path / "saved").mkdir()
    with pytest.raises(ConfigError, match="has no text_encoder/"):
        load_text_encoder(tmp_path / "saved")
    with pytest.raises(ConfigError, match="only for single-file checkpoints"):
        load_text_encoder(tiny_sd, sd_version="v1")
    with pytest.raises(ConfigError, match="tokenizer folder .* not found"):
        load_text_encoder(tiny_file, config_dir=tiny_sd, tokenizer=tmp_path / "missing")
    text_encoder, tokenizer = load_text_encoder(tiny_sd)
    with pytest.raises(ConfigError, match="more than the text encoder's context of 77; shorten it"):
        PromptEmbeddings.compute(text_encoder, tokenizer, {0: DIFF_CITYSCAPES_PROMPTS["building"]})
    with pytest.raises(ConfigError, match="float32 CPU text encoder"):
        PromptEmbeddings.compute(text_encoder.half(), tokenizer, RELEASED)


# -- the tiny preset's tokenizer with whole-word tokens ---------------------------------------------


def test_tiny_tokenizer_with_words_encodes_each_given_word_as_one_token_and_every_prompt_fits(tmp_path: Path) -> None:
    import re

    from transformers import CLIPTokenizer

    from madm_train.models.tiny_sd import build_tiny_sd

    texts = [*DIFF_CITYSCAPES_PROMPTS.values(), *MERGED_PROMPTS.values()]
    words = [word for text in texts for word in re.findall(r"[A-Za-z]+", text)]
    folder = build_tiny_sd(tmp_path / "tiny", words=words)
    tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer")
    split = sorted(word for word in set(words) if len(tokenizer(word).input_ids) != 3)  # start, word, end
    assert split == []
    assert max(len(tokenizer(text).input_ids) for text in texts) <= 77
    plain = CLIPTokenizer.from_pretrained(build_tiny_sd(tmp_path / "plain") / "tokenizer")
    assert max(len(plain(text).input_ids) for text in texts) > 77  # byte symbols alone: one token per character
    assert tokenizer("").input_ids == [len(tokenizer) - 2, len(tokenizer) - 1]  # specials stay last, as SD's
    # a word that is a prefix of another, and repeated letter pairs ("including": i-n twice), stay whole
    assert tokenizer.convert_ids_to_tokens(tokenizer("road roads including").input_ids[1:-1]) == \
        ["road</w>", "roads</w>", "including</w>"]
    # the built folder loads as SD and embeds every prompt
    embeddings = PromptEmbeddings.from_pretrained(folder, dict(enumerate(texts)), empty_prompt=load_stable_diffusion(folder)
                                                  .empty_prompt)  # fmt: skip
    assert embeddings.embeddings.shape[0] == len(texts) and torch.isfinite(embeddings.embeddings).all()
