"""Class prompts of DIFF's conditional (IPKL) branch, and their text embeddings computed once.

DIFF's conditional branch (iccld_diff_spec.md B.2) runs the UNet with one text context per class
present in the source label, and composes the per-prompt latent updates inside each class's mask.
The contexts are fixed sentences, so their embeddings are computed once, on the CPU in float32,
and the text encoder (123 M parameters for SD 1.x, 340 M for SD 2.x) is dropped again:
:class:`PromptEmbeddings` holds K×77×D class embeddings plus the empty prompt's 1×77×D, can be
saved and loaded without any text encoder, and is what the DIFF model keeps as buffers, so
checkpoints carry the embeddings.

**The released prompts** (:data:`DIFF_CITYSCAPES_PROMPTS`, :data:`DIFF_ACTIVE_CLASSES`) are the
``label_map`` of ``Yux1angJi/DIFF@55595fb:mmseg/models/backbones/diff/configs/diff_config.yaml``
l.59–78, copied as data: one sentence per Cityscapes class, each the prefix
:data:`DIFF_PROMPT_PREFIX`, the class name and a short gloss. Only five entries are active there
(sidewalk, wall, rider, truck, train); the other 14 are commented out. DIFF embeds each sentence
as it is (``get_tokens_embedding`` in ``.../src/archs/stable_diffusion/diffusion.py``: padded to
the full context, last hidden state, no attention mask), and so does :func:`prompt_embedding`.

**Our label sets** (:func:`class_prompts`). A class of DSEC-11 or FMB-9 is one Cityscapes class or
the union of several (``madm_ros.palettes``: rider joins person, terrain joins vegetation, traffic
light joins traffic sign, every vehicle joins car). Choices, ours and not DIFF's:

- a class made of one Cityscapes class keeps that class's released sentence, unchanged;
- a merged class gets a sentence of the same form, prefix + name + gloss, whose gloss joins the
  glosses of its members (:data:`MERGED_PROMPTS`), because its label mask covers all of them;
- ``"released"`` activates every class that contains a released active class, so every region the
  released config conditions stays conditioned: DSEC-11 sidewalk, wall, person (rider), car
  (truck, train); FMB-9 sidewalk, person, car (FMB-9 has no wall). ``"all"`` activates every class;
- ``overrides`` (class name → sentence) replaces sentences, used verbatim.

**Caches.** A saved :class:`PromptEmbeddings` is a ``.safetensors`` file keyed by class id
(``class_<id>``, plus ``empty``) whose metadata holds the prompt texts and ``empty_sha256``, the
SHA-256 of the empty-prompt embedding. That hash stands for the text encoder: the backbone holds
that embedding without the encoder (``load_stable_diffusion(...).empty_prompt``), and any other
encoder, or a tokenizer that pads differently (SD 1.x vs 2.x), changes it. A cache is used only
when its texts and that hash equal the requested ones; otherwise it is computed again. Not
noticed: a text encoder or tokenizer that differs only in tokens "" does not use (one fine-tuned
token embedding, another vocabulary with the same special tokens).
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal

import torch

from madm_ros.errors import ConfigError
from madm_ros.palettes import CITYSCAPES_19, IGNORE_INDEX, get_label_set, label_mapping
from madm_train.models.stable_diffusion import load_text_encoder, prompt_embedding

if TYPE_CHECKING:
    from transformers import CLIPTextModel, CLIPTokenizer

    from madm_train.models.stable_diffusion import SDVersion

__all__ = [
    "DIFF_ACTIVE_CLASSES",
    "DIFF_CITYSCAPES_PROMPTS",
    "DIFF_PROMPT_PREFIX",
    "MERGED_PROMPTS",
    "PROMPTS_FORMAT",
    "PROMPT_SETS",
    "PromptEmbeddings",
    "PromptSet",
    "class_prompts",
]

logger = logging.getLogger(__name__)

DIFF_PROMPT_PREFIX = "A high quality photo; europe city; "
"""What every released DIFF class prompt starts with (``diff_config.yaml`` l.60–78)."""

DIFF_CITYSCAPES_PROMPTS: Mapping[str, str] = MappingProxyType({
    "road": "A high quality photo; europe city; road, All types of roads, including lanes for vehicles",
    "sidewalk": "A high quality photo; europe city; sidewalk, Paths for pedestrian use",
    "building": "A high quality photo; europe city; building, Includes houses, shops, skyscrapers, and other types of buildings",
    "wall": "A high quality photo; europe city; wall, Outer walls of buildings or structures",
    "fence": "A high quality photo; europe city; fence, Structures used for enclosures, like metal fences, wooden fences",
    "pole": "A high quality photo; europe city; pole, Slender structures such as lamp posts, utility poles",
    "traffic light": "A high quality photo; europe city; traffic light, Lights used to control traffic flow",
    "traffic sign": "A high quality photo; europe city; traffic sign, Signs indicating traffic rules, such as stop signs, "
                    "speed limits",
    "vegetation": "A high quality photo; europe city; vegetation, Natural plants like trees, grass, bushes",
    "terrain": "A high quality photo; europe city; terrain, Natural landforms like rocks, hills",
    "sky": "A high quality photo; europe city; sky, The part of the image representing the sky",
    "person": "A high quality photo; europe city; person, Pedestrians, cyclists",
    "rider": "A high quality photo; europe city; rider, People riding bicycles, motorcycles",
    "car": "A high quality photo; europe city; car, All types of four-wheeled vehicles, including sedans, trucks, buses",
    "truck": "A high quality photo; europe city; truck, Larger vehicles used for cargo transport",
    "bus": "A high quality photo; europe city; bus, Public transport vehicles",
    "train": "A high quality photo; europe city; train, Vehicles on railway tracks",
    "motorcycle": "A high quality photo; europe city; motorcycle, Includes motorcycles and scooters",
    "bicycle": "A high quality photo; europe city; bicycle, Includes all types of bicycles",
})  # fmt: skip
"""DIFF's prompt of each Cityscapes-19 class, verbatim (``diff_config.yaml`` l.60–78, ``label_map`` keyed by train id)."""

DIFF_ACTIVE_CLASSES: tuple[str, ...] = ("sidewalk", "wall", "rider", "truck", "train")
"""The classes whose prompts are active in the released config (train ids 1, 3, 12, 14, 16); the rest are commented out."""

MERGED_PROMPTS: Mapping[tuple[str, ...], str] = MappingProxyType({
    ("traffic light", "traffic sign"): "A high quality photo; europe city; traffic sign, Lights used to control traffic "
                                       "flow, and signs indicating traffic rules, such as stop signs, speed limits",
    ("vegetation", "terrain"): "A high quality photo; europe city; vegetation, Natural plants like trees, grass, bushes, "
                               "and natural landforms like rocks, hills",
    ("person", "rider"): "A high quality photo; europe city; person, Pedestrians, cyclists, and people riding bicycles, "
                         "motorcycles",
    ("car", "truck", "bus", "train", "motorcycle", "bicycle"): "A high quality photo; europe city; car, All types of "
                                                                "vehicles, including sedans, trucks, buses, trains, "
                                                                "motorcycles, bicycles",
})  # fmt: skip
"""Our sentences for classes of DSEC-11/FMB-9 that merge Cityscapes classes, keyed by the members in
Cityscapes order: DIFF's form (prefix, name, gloss) with the members' released glosses joined. Not released."""

PromptSet = Literal["released", "all"]
"""Named choices of active classes for :func:`class_prompts`."""
PROMPT_SETS: tuple[PromptSet, ...] = ("released", "all")
"""The values of :data:`PromptSet`, for messages and config checks."""

PROMPTS_FORMAT = "madm-diff-prompts/1"
"""``format`` tag in the metadata of a saved :class:`PromptEmbeddings`."""


def class_prompts(
    label_set: str,
    *,
    active: PromptSet | Sequence[str] = "released",
    overrides: Mapping[str, str] | None = None,
) -> dict[int, str]:
    """The class prompts of DIFF's conditional branch for a label set: {class id: sentence}, ids ascending.

    Args:
        label_set: ``cityscapes19``, ``dsec11`` or ``fmb9`` (``madm_ros.palettes``).
        active: ``"released"`` (DIFF's five classes, or the classes of ``label_set`` that contain
            them), ``"all"`` (every class), or the names of the classes to condition.
        overrides: Class name → sentence, used verbatim instead of the built-in one; each named
            class must exist and be active.
    """
    labels = get_label_set(label_set)
    names = labels.class_names
    members = _members(label_set)
    if isinstance(active, str):
        if active == "released":
            chosen = [i for i in range(len(names)) if set(members[i]) & set(DIFF_ACTIVE_CLASSES)]
        elif active == "all":
            chosen = list(range(len(names)))
        else:
            raise ConfigError(f"active prompt set {active!r} is unknown; use one of {list(PROMPT_SETS)} or a list of "
                              f"class names of {label_set}: {list(names)}")  # fmt: skip
    else:
        unknown = [name for name in active if name not in names]
        if unknown:
            raise ConfigError(f"active prompt classes {unknown} are not classes of {label_set}: {list(names)}")
        chosen = sorted({names.index(name) for name in active})
    if not chosen:
        raise ConfigError(f"no class of {label_set} is active, so the conditional branch would equal the unconditional "
                          "one: name at least one class, or turn the conditional branch off")  # fmt: skip
    overrides = dict(overrides or {})
    unknown = [name for name in overrides if name not in names]
    if unknown:
        raise ConfigError(f"prompt overrides name {unknown}, which are not classes of {label_set}: {list(names)}")
    inactive = [name for name in overrides if names.index(name) not in chosen]
    if inactive:
        raise ConfigError(f"prompt overrides for {inactive} would never be used: those classes are not active "
                          f"({[names[i] for i in chosen]}); add them to the active classes or drop the overrides")  # fmt: skip
    blank = [name for name, text in overrides.items() if not isinstance(text, str) or not text.strip()]
    if blank:
        raise ConfigError(f"prompt overrides for {blank} are empty; the empty prompt is the base context already")
    return {i: overrides.get(names[i]) or _builtin_prompt(label_set, names[i], members[i]) for i in chosen}


def _members(label_set: str) -> dict[int, tuple[str, ...]]:
    """The Cityscapes classes that make up each class of ``label_set`` (by ``madm_ros.palettes``' mapping)."""
    lut = label_mapping(CITYSCAPES_19.name, label_set)
    members: dict[int, tuple[str, ...]] = {i: () for i in range(get_label_set(label_set).num_classes)}
    for source, name in enumerate(CITYSCAPES_19.class_names):
        if int(lut[source]) != IGNORE_INDEX:
            members[int(lut[source])] += (name,)
    return members


def _builtin_prompt(label_set: str, name: str, members: tuple[str, ...]) -> str:
    if len(members) == 1:
        return DIFF_CITYSCAPES_PROMPTS[members[0]]
    if members in MERGED_PROMPTS:
        return MERGED_PROMPTS[members]
    raise ConfigError(f"class {name!r} of {label_set} is made of the Cityscapes classes {list(members)}, for which no "
                      f"prompt is known; give it one in the prompt overrides ({name!r}: a sentence)")  # fmt: skip


def _digest(empty: torch.Tensor) -> str:
    """SHA-256 of an empty-prompt embedding (shape and float32 bytes): the fingerprint of its text encoder."""
    values = empty.detach().to("cpu", torch.float32).contiguous()
    digest = hashlib.sha256(repr(tuple(values.shape)).encode())
    digest.update(values.numpy().tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class PromptEmbeddings:
    """Text embeddings of class prompts and of the empty prompt, float32, in ascending class-id order.

    Build with :meth:`from_pretrained` (loads the text encoder, computes, drops it; optionally through
    a cache file) or :meth:`compute` (with an encoder at hand); :meth:`save`/:meth:`load` need no
    text encoder.

    Attributes:
        class_ids: Class id of each prompt, ascending.
        texts: The prompt sentences, in the same order.
        embeddings: K×L×D, row k the embedding of ``texts[k]`` (L = 77; D = 768 for SD 1.x, 1024 for 2.x).
        empty: 1×L×D, the embedding of "" (DIFF's base and unconditional context).
    """

    class_ids: tuple[int, ...]
    texts: tuple[str, ...]
    embeddings: torch.Tensor
    empty: torch.Tensor

    def __post_init__(self) -> None:
        if not self.class_ids or len(self.class_ids) != len(self.texts):
            raise ConfigError(f"prompt embeddings need one text per class id, at least one; got ids {list(self.class_ids)} "
                              f"and {len(self.texts)} texts")  # fmt: skip
        if list(self.class_ids) != sorted(set(self.class_ids)) or not 0 <= self.class_ids[0] <= self.class_ids[-1] < 255:
            raise ConfigError(f"prompt class ids must be distinct, ascending and in 0–254, got {list(self.class_ids)}")
        if self.empty.ndim != 3 or self.empty.shape[0] != 1 or self.empty.dtype != torch.float32:
            raise ConfigError(f"the empty-prompt embedding must be 1×L×D float32, got {tuple(self.empty.shape)} "
                              f"{self.empty.dtype}")  # fmt: skip
        expected = (len(self.class_ids), *self.empty.shape[1:])
        if tuple(self.embeddings.shape) != expected or self.embeddings.dtype != torch.float32:
            raise ConfigError(f"class prompt embeddings must be {expected} float32 (one per class id, shaped like the "
                              f"empty prompt), got {tuple(self.embeddings.shape)} {self.embeddings.dtype}")  # fmt: skip

    @property
    def prompts(self) -> dict[int, str]:
        """Class id → sentence."""
        return dict(zip(self.class_ids, self.texts))

    @property
    def empty_sha256(self) -> str:
        """SHA-256 of :attr:`empty`, standing for the text encoder (see the module docstring)."""
        return _digest(self.empty)

    @classmethod
    def compute(cls, text_encoder: CLIPTextModel, tokenizer: CLIPTokenizer, prompts: Mapping[int, str]) -> PromptEmbeddings:
        """Embed ``prompts`` (class id → sentence) and "" with a float32 CPU text encoder, one prompt per pass.

        One pass per prompt, as the empty prompt is embedded for the backbone, so that the empty
        entry equals the backbone's ``empty_prompt`` bit for bit when both come from the same files.
        """
        if not prompts:
            raise ConfigError("no class prompts given; with none the conditional branch equals the unconditional one")
        parameter = next(text_encoder.parameters())
        if parameter.dtype != torch.float32 or parameter.device.type != "cpu":
            raise ConfigError(f"embed prompts with a float32 CPU text encoder (load_text_encoder gives one), got "
                              f"{parameter.dtype} on {parameter.device}")  # fmt: skip
        ids = sorted(prompts)
        blank = [i for i in ids if not prompts[i].strip()]
        if blank:
            raise ConfigError(f"class prompts of ids {blank} are empty; the empty prompt is the base context already")
        rows = [prompt_embedding(text_encoder, tokenizer, prompts[i]) for i in ids]
        empty = prompt_embedding(text_encoder, tokenizer, "")
        return cls(tuple(ids), tuple(prompts[i] for i in ids), torch.cat(rows), empty)

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        prompts: Mapping[int, str],
        *,
        empty_prompt: torch.Tensor,
        cache: str | Path | None = None,
        sd_version: SDVersion | None = None,
        config_dir: str | Path | None = None,
        tokenizer: str | Path | None = None,
    ) -> PromptEmbeddings:
        """Embeddings of ``prompts`` with the text encoder of the SD model at ``path``, which is then released.

        Args:
            path: The SD folder or single file of the backbone (as in
                :func:`~madm_train.models.stable_diffusion.load_text_encoder`).
            prompts: Class id → sentence (:func:`class_prompts`).
            empty_prompt: The backbone's embedding of "" (``load_stable_diffusion(path).empty_prompt``).
                The result's ``empty`` is this tensor; a text encoder that gives another one
                (beyond float rounding) belongs to another model and is refused.
            cache: A ``.safetensors`` file: used when it holds these prompts for this empty prompt
                (no text encoder is loaded then), else (re)written after computing.
            sd_version: For a single file, as in ``load_text_encoder``.
            config_dir: For a single file, as in ``load_text_encoder``.
            tokenizer: A local tokenizer folder; required for a single file, as in ``load_text_encoder``.
        """
        if cache is not None and Path(cache).is_file():
            try:
                cached = cls.load(cache)
                cached.check(prompts, empty_prompt)
            except ConfigError as error:
                logger.info("prompt embedding cache not used, computing again: %s", error)
            else:
                return cached
        text_encoder, tokens = load_text_encoder(path, sd_version=sd_version, config_dir=config_dir, tokenizer=tokenizer)
        fresh = cls.compute(text_encoder, tokens, prompts)
        del text_encoder, tokens  # 123 M (SD 1.x) to 340 M (SD 2.x) parameters nothing needs any more
        gc.collect()
        reference = empty_prompt.detach().to("cpu", torch.float32)
        difference = (fresh.empty - reference).abs().max().item() if fresh.empty.shape == reference.shape else float("inf")
        if not difference <= 1e-3 * max(reference.abs().max().item(), 1e-6):
            raise ConfigError(
                f'the text encoder of {path} embeds "" as {tuple(fresh.empty.shape)} differing from the backbone\'s '
                f"{tuple(reference.shape)} empty prompt by up to {difference:.3g}: they are not the same model. Load the "
                "prompts from the SD folder or file the backbone was loaded from (for a single file, with the tokenizer "
                "of that model)"
            )
        result = cls(fresh.class_ids, fresh.texts, fresh.embeddings, reference.clone())
        if cache is not None:
            result.save(cache)
        return result

    def check(self, prompts: Mapping[int, str], empty_prompt: torch.Tensor) -> None:
        """Refuse these embeddings unless they are of ``prompts`` for the model whose embedding of "" is ``empty_prompt``."""
        wanted = {int(i): text for i, text in prompts.items()}
        if wanted != self.prompts:
            changed = sorted(i for i in set(wanted) | set(self.prompts) if wanted.get(i) != self.prompts.get(i))
            raise ConfigError(f"the prompt embeddings are of other texts (class ids {changed} differ: "
                              f"{[self.prompts.get(i) for i in changed]} vs {[wanted.get(i) for i in changed]})")  # fmt: skip
        if _digest(empty_prompt) != self.empty_sha256:
            raise ConfigError("the prompt embeddings were computed for another text encoder: their empty-prompt embedding "
                              "(empty_sha256) is not the backbone's")  # fmt: skip

    def save(self, path: str | Path) -> Path:
        """Write a ``.safetensors`` file (``class_<id>`` L×D, ``empty`` L×D; texts and hash in metadata), atomically."""
        from safetensors.torch import save

        from madm_ros.atomic_io import atomic_write_bytes

        path = Path(path)
        tensors = {f"class_{i}": row.contiguous() for i, row in zip(self.class_ids, self.embeddings)}
        tensors["empty"] = self.empty[0].contiguous()
        metadata = {"format": PROMPTS_FORMAT, "prompts": json.dumps({str(i): t for i, t in self.prompts.items()}),
                    "empty_sha256": self.empty_sha256}  # fmt: skip
        path.parent.mkdir(parents=True, exist_ok=True)
        return atomic_write_bytes(path, save(tensors, metadata=metadata))

    @classmethod
    def load(cls, path: str | Path) -> PromptEmbeddings:
        """Read what :meth:`save` wrote; refuses other files and files whose tensors no longer match their metadata."""
        from safetensors import safe_open

        path = Path(path)
        try:
            with safe_open(str(path), framework="pt") as file:
                metadata = file.metadata() or {}
                tensors = {key: file.get_tensor(key) for key in file.keys()}  # noqa: SIM118 (not a dict)
        except Exception as error:  # safetensors raises its own and OS errors for unreadable files
            raise ConfigError(f"could not read prompt embeddings {path}: {error}") from None
        if metadata.get("format") != PROMPTS_FORMAT:
            raise ConfigError(f"{path} is not a prompt embedding file (format {metadata.get('format')!r}, "
                              f"expected {PROMPTS_FORMAT!r})")  # fmt: skip
        try:
            prompts = {int(i): str(text) for i, text in json.loads(metadata["prompts"]).items()}
        except (KeyError, ValueError, AttributeError) as error:
            raise ConfigError(f"{path}: unreadable prompt texts in its metadata ({error})") from None
        ids = sorted(prompts)
        expected = {f"class_{i}" for i in ids} | {"empty"}
        if set(tensors) != expected:
            raise ConfigError(f"{path} holds tensors {sorted(tensors)}, its metadata calls for {sorted(expected)}")
        try:
            loaded = cls(tuple(ids), tuple(prompts[i] for i in ids), torch.stack([tensors[f"class_{i}"] for i in ids]),
                         tensors["empty"][None])  # fmt: skip
        except RuntimeError as error:  # rows of different shapes
            raise ConfigError(f"{path}: class embeddings of different shapes ({error})") from None
        if loaded.empty_sha256 != metadata.get("empty_sha256"):
            raise ConfigError(f"{path}: its empty-prompt embedding does not match its empty_sha256; the file is damaged, "
                              "delete it to compute the embeddings again")  # fmt: skip
        return loaded
