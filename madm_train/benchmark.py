"""``benchmark --suite synthetic``: MADM, DIFF and ICCLD against source-only, with ablations, on data anyone can regenerate.

Protocol (one preset fixes every number; ``tiny`` runs on a 2-core CPU):

1. Data: a synthetic folder for training and evaluation (the preset's scene set, by default ``varied``: streets,
   junctions and open areas from varied camera poses; seed 0) and a second
   one with another seed for the prior, so the prior never sees an evaluation scene.
2. Prior: ``pretrain_prior`` on the second folder (see ``madm_train.training.prior``).
3. Per seed, twice — from the prior and from random tiny weights ("no prior"): a source-only
   **warm-up** run on labelled RGB. Every method then continues from that warm-up's weights for
   the same number of iterations with the same schedule, so the methods differ only in what
   they train on:

   - ``source_only``: the source cross-entropy alone (one run, scored on every modality);
   - ``madm``: the full recipe (the task's released DPLG k₀ and end fraction, LPLR weights);
   - ``madm_no_dplg``: the teacher sees clean target latents (``method.dplg.enabled=false``);
   - ``madm_no_lplr``: no latent regression (``method.lplr.source_weight=method.lplr.target_weight=0``).

   DIFF has its own network (frozen diffusion UNet, multi-timestep fusion, head), so it has its own
   warm-up: DIFF in generalisation mode on labelled RGB from the prior's UNet (with IPKL), for the
   same warm-up iterations. Then, for the same adaptation iterations and schedule:

   - ``diff_generalisation``: DIFF's released setting continued — source only, no target image
     (one run, scored on every modality);
   - ``diff``: DIFF in adaptation mode — the same source losses plus the self-training loop
     (EMA teacher of fusion and head, ClassMix, confidence-weighted pseudo-labels).

   At this size DIFF runs the 5-step trajectory preset (the released 37 steps cost 7× more UNet
   passes), and its class prompts are the class names: the tiny prior's text encoder is random,
   so a prompt only needs to give each class its own context, and DIFF's sentences exceed its
   byte-level tokenizer's 77 tokens. Every method uses the benchmark's optimiser (MADM's schedule
   at the preset's learning rate), not DIFF's released one, so the rows differ only in method.

   ICCLD's network (E and D from the prior's VAE, inter-coder connections) has its own warm-up too:
   its stage 1 with ``target_free`` (source cross-entropy only), once with and once without the
   inter-coder connections. Then:

   - ``iccld_no_stage2``: stage 1, self-training of E and D (the paper's "without stage 2" ablation);
   - ``iccld``: stage 2 from that model — ε_θ from the prior's UNet, diffusion, segmentation and
     adversarial latent losses (λ_adv warmed up over a quarter of the iterations);
   - ``iccld_no_inter_coder_no_stage2`` and ``iccld_no_inter_coder``: the same without the
     inter-coder connections (the paper's other ablation).

   ICCLD's stage 2 adds its iterations to stage 1's, as the paper's two-stage protocol does; the
   "without stage 2" row is the model it starts from.

   The ceiling, per modality: ``oracle`` continues from the source-only warm-up for the same
   iterations on the *target modality's* labelled frames of the training split
   (``data.source_modality`` = the modality; the synthetic scenes are labelled in every modality).

   Starting adaptation from a source-only model, rather than jointly from scratch as the
   reference does over 10k iterations, is this benchmark's departure: at a CPU budget of a few
   hundred iterations a teacher that has not yet learnt the source classes gives no pseudo-labels
   above the 0.968 confidence threshold, and the comparison would measure nothing.
4. Every model is scored on the held-out target sequences (dataset-level mIoU, per-class IoU).
   Beside them, the floor: the **layout-only** baseline (``madm_train.training.layout_baseline``)
   predicts, for every image, the most frequent class at each pixel of the training split's labels,
   scored on the same test split. It depends on no seed (reported with the seed list, spread 0).

``DIR/results.json`` holds ``{modality: {method: {"miou_mean", "miou_std", "seeds", ...}}}`` (DIFF's keys start with
``diff``, ICCLD's with ``iccld``; the layout-only baseline's key is ``layout_only``);
``DIR/results.md`` the table; ``DIR/figure_<modality>.png`` input | ground truth | source-only |
MADM | DIFF (adaptation) | ICCLD (where trained) for a few test frames. Finished runs (``metrics.json`` present) are reused, so an
interrupted benchmark continues where it stopped; a warm-up or the prior is trained only when a run that needs it is
missing. With ``records`` the finished runs' metrics also outlive the work folder (see :func:`run_benchmark`).
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from madm_ros.atomic_io import atomic_write_bytes
from madm_ros.errors import ConfigError
from madm_ros.preprocessing import NODE_MODALITIES
from madm_train.training.prior import PriorConfig

__all__ = ["LAYOUT_ONLY", "METHODS", "MODALITIES", "PRESETS", "VARIANTS", "WARMUPS", "Preset", "Variant", "best_label_free_row",
           "run_benchmark", "run_folder"]

MODALITIES: tuple[str, ...] = NODE_MODALITIES
"""The modalities adapted to from the labelled RGB source: those a node runs on."""

TASK_OF_MODALITY = {"depth": "depth", "thermal": "infrared", "events": "events"}
"""The released task whose per-task values (k₀, DPLG end fraction, LPLR weights) each modality uses."""


@dataclass(frozen=True)
class Variant:
    """One row of the table: a method of the registry (``madm_train.methods.METHODS``) and its config changes.

    Attributes:
        method: ``method.name`` of the runs.
        changes: Changes to the method section against the released recipe, e.g. ``{"dplg": {"enabled": False}}``.
        prior: Starts from the benchmark's diffusion prior (else from random tiny weights).
        warmup: The warm-up it continues from, a key of :data:`WARMUPS`.
        target_free: Never sees a target image: trained once, scored on every modality.
        after: Continues from this row's model of the same seed and modality instead of the
            warm-up (ICCLD's stage 2 from its stage 1); that row comes earlier in :data:`VARIANTS`.
        oracle: Trains on the target modality's labelled frames instead of RGB
            (``data.source_modality``), per modality: the target-labelled ceiling.
    """

    method: str
    changes: dict[str, Any] = field(default_factory=dict)
    prior: bool = True
    warmup: str = "source_only"
    target_free: bool = False
    after: str | None = None
    oracle: bool = False


WARMUPS: dict[str, tuple[str, dict[str, Any]]] = {
    "source_only": ("source_only", {}),
    "diff": ("diff", {"mode": "generalisation"}),
    "iccld": ("iccld", {"target_free": True}),
    "iccld_no_inter_coder": ("iccld", {"target_free": True, "model": {"inter_coder": "none"}}),
}
"""Warm-up key → (method, its changes): the source-only training each network starts from (folder ``warmup`` for
MADM's network, ``warmup_<key>`` for the others)."""


VARIANTS: dict[str, Variant] = {
    "source_only": Variant("source_only", target_free=True),
    "madm": Variant("madm"),
    "madm_no_dplg": Variant("madm", {"dplg": {"enabled": False}}),
    "madm_no_lplr": Variant("madm", {"lplr": {"source_weight": 0.0, "target_weight": 0.0}}),
    "source_only_no_prior": Variant("source_only", prior=False, target_free=True),
    "madm_no_prior": Variant("madm", prior=False),
    "diff_generalisation": Variant("diff", {"mode": "generalisation"}, warmup="diff", target_free=True),
    "diff": Variant("diff", {"mode": "adaptation"}, warmup="diff"),
    "iccld_no_stage2": Variant("iccld", warmup="iccld"),
    "iccld": Variant("iccld", {"stage": 2}, warmup="iccld", after="iccld_no_stage2"),
    "iccld_no_inter_coder_no_stage2": Variant("iccld", {"model": {"inter_coder": "none"}}, warmup="iccld_no_inter_coder"),
    "iccld_no_inter_coder": Variant("iccld", {"stage": 2, "model": {"inter_coder": "none"}}, warmup="iccld_no_inter_coder",
                                    after="iccld_no_inter_coder_no_stage2"),
    "oracle": Variant("source_only", oracle=True),
}
"""Table rows by result key; the target-free rows are trained once per prior and scored on every modality."""


def run_folder(out: str | Path, seed: int, key: str, modality: str | None) -> Path:
    """The run folder of row ``key`` (its model in ``model/``) for ``modality`` and ``seed`` in the benchmark folder ``out``.

    A target-free row is trained once per seed, so every modality shares its folder.
    """
    parts = (key,) if VARIANTS[key].target_free or modality is None else (modality, key)
    return Path(out) / "runs" / f"seed{seed}" / Path(*parts)


def best_label_free_row(results: dict[str, Any], modality: str) -> str:
    """The row of ``results`` (a ``results.json``) with the highest mean mIoU on ``modality``, of those without target labels.

    Why: the default students are distilled from the best teacher of the benchmark per modality,
    whichever method it is; the oracle trains on target labels and the layout-only row has no model.
    """
    rows = {key: row["miou_mean"] for key, row in results.get(modality, {}).items()
            if key in VARIANTS and not VARIANTS[key].oracle}
    if not rows:
        raise ConfigError(f"the benchmark results hold no {modality} row without target labels; run the benchmark first")
    return max(rows, key=lambda key: rows[key])


LAYOUT_ONLY = "layout_only"
"""Result key of the layout-only baseline (not a trained variant: fitted from the training labels, no seed)."""
DIFF_STEPS = 5
"""DIFF's trajectory preset in the benchmark (see the module docstring)."""
METHODS: tuple[str, ...] = tuple(VARIANTS)
FIGURE_FRAMES = 3
FIGURE_METHODS = ("source_only", "madm", "diff", "iccld")
"""Columns of the figures and rows of the per-class tables (those the benchmark ran)."""


@dataclass(frozen=True)
class Preset:
    """Every number of one benchmark size.

    Attributes:
        frames: Synthetic frames of the training/evaluation folder (20 % of its sequences are held out).
            Varied scenes need many: on 160 training frames even a target-labelled model overfits
            (depth, 600 iterations: 16.2 mIoU on held-out sequences, falling to 14.7 by 1,800 iterations),
            on 800 it does not (16.5, pixel accuracy 56.8 % against 47.5 %). Frames cost only generation
            time (about 2.5 minutes per 1,000), not training time.
        prior_frames: Frames of the prior's own folder.
        generate_hw: Size the synthetic folders are generated at.
        network_hw: Size images are resized to; training crop and evaluation size alike.
        batch_size: Source and target images per iteration (1 + 1 in the reference).
        warmup_iters: Source-only iterations every method starts from.
        adapt_iters: Iterations of every method after the warm-up.
        lr: Learning rate of warm-up and methods. The released 5e-6 (and 1e-4) left the tiny model's
            random head at a source cross-entropy of about 1.5 after 550 iterations, a teacher with no
            pixel above the 0.968 threshold (q = 0), so MADM degenerated to source-only; at 1e-3
            the warm-up reaches about 0.5 and q is 0.1–0.2 from the first adaptation iterations.
        device: Torch device.
        amp: bf16 autocast (GPU presets).
        prior: Settings of the prior's pretraining.
        seeds: Default seeds.
        iccld_sampling_steps: T of ICCLD's stage-2 models when they are scored (its default, 10).
        scenes: The generator's scene set (``SynthConfig.scenes``) of both folders. ``varied``: streets,
            junctions and open areas seen from varied poses, so that no model scores by layout alone
            (the layout-only row measures how far it would get).
    """

    frames: int
    prior_frames: int
    generate_hw: tuple[int, int]
    network_hw: tuple[int, int]
    batch_size: int
    warmup_iters: int
    adapt_iters: int
    lr: float
    device: str
    amp: bool
    prior: PriorConfig = field(default_factory=PriorConfig)
    seeds: tuple[int, ...] = (0, 1, 2)
    iccld_sampling_steps: int = 10
    scenes: str = "varied"


PRESETS: dict[str, Preset] = {
    "tiny": Preset(frames=1000, prior_frames=500, generate_hw=(128, 256), network_hw=(64, 128), batch_size=2,
                   warmup_iters=600, adapt_iters=100, lr=1e-3, device="cpu", amp=False,
                   prior=PriorConfig(crop=64, vae_steps=1000, unet_steps=1000, batch_size=16)),
    "gpu": Preset(frames=1000, prior_frames=1000, generate_hw=(256, 512), network_hw=(256, 512), batch_size=2,
                  warmup_iters=2000, adapt_iters=2000, lr=6e-5, device="cuda", amp=True,
                  prior=PriorConfig(crop=128, vae_steps=10_000, unet_steps=10_000, batch_size=32)),
}
"""``tiny``: the committed CPU run, about 45 minutes per seed on 2 idle cores (warm-ups: MADM's 200 s, DIFF's 320 s,
ICCLD's 35 s; runs: MADM 80 s, DIFF 110 s, ICCLD stage 1 14 s and stage 2 60 s; each run's seconds are in the
records); ``gpu``: larger scenes and longer runs on one GPU."""


@dataclass
class _Plan:
    """Paths and settings of one benchmark folder."""

    out: Path
    preset: Preset
    seeds: tuple[int, ...]
    modalities: tuple[str, ...]
    variants: tuple[str, ...] = tuple(VARIANTS)
    records: Path | None = None

    @property
    def data(self) -> Path:
        return self.out / "data" / "scenes"

    @property
    def prior_data(self) -> Path:
        return self.out / "data" / "prior_scenes"

    @property
    def prior(self) -> Path:
        return self.out / "prior"

    def run_dir(self, seed: int, *parts: str) -> Path:
        return self.out / "runs" / f"seed{seed}" / Path(*parts)


def _config(plan: _Plan, modality: str, seed: int, out_dir: Path, method: str, *changes: dict[str, Any],
            max_iter: int | None = None, source_modality: str = "rgb") -> Any:
    """The config of one run: the modality's released task values scaled to the preset, then ``changes`` (method section)."""
    import dataclasses

    from madm_ros.palettes import get_label_set
    from madm_train.config import config_from_dict, task_defaults
    from madm_train.methods.diff.prompts import class_prompts

    p, task = plan.preset, TASK_OF_MODALITY[modality]
    released = task_defaults(task, "madm")
    optim = {k: v for k, v in dataclasses.asdict(released.optim).items() if k not in ("lr", "max_iter")}
    end_fraction = released.method.dplg.end_iter / released.optim.max_iter
    values: dict[str, dict[str, Any]] = {
        "data": {"source_kind": "folder", "source_root": str(plan.data), "source_modality": source_modality,
                 "target_kind": "folder", "target_root": str(plan.data), "modality": modality, "label_set": "dsec11",
                 "source_resize_hw": list(p.network_hw), "target_resize_hw": list(p.network_hw),
                 "crop_hw": list(p.network_hw), "batch_size": p.batch_size,
                 "rare_class_min_pixels": max(1, round(3000 * p.network_hw[0] * p.network_hw[1] / 512**2))},
        "optim": {**optim, "lr": p.lr, "max_iter": max_iter or p.adapt_iters},
        "run": {"out_dir": str(out_dir), "seed": seed, "device": p.device, "amp": p.amp, "amp_dtype": "bfloat16",
                "log_every": 10, "eval_every": 0, "checkpoint_every": 0, "checkpoints_total_limit": 1,
                "resume": "latest"},
    }
    section: dict[str, Any] = {"name": method, "model": {"preset": "tiny"}}
    if method == "diff":
        names = get_label_set("dsec11").class_names
        section["model"]["steps"] = DIFF_STEPS
        section["ipkl"] = {"prompt_texts": {names[i]: names[i] for i in class_prompts("dsec11")}}
    elif method == "iccld":
        section["adversarial"] = {"warmup_iters": max(1, p.adapt_iters // 4)}
        section["model"]["sampling_steps"] = p.iccld_sampling_steps
    else:
        section["model"]["finetune"] = "full"
    if method == "madm":
        section["dplg"] = {"end_iter": max(1, round(end_fraction * p.adapt_iters))}
    for change in changes:
        for key, value in change.items():
            if isinstance(value, dict):
                section.setdefault(key, {}).update(value)
            else:
                section[key] = value
    return config_from_dict({"task": task, "method": section, **values})


@dataclass(frozen=True)
class _Run:
    """One training run: its config (whose ``run.out_dir`` is its folder) and the run whose model it continues."""

    config: Any
    label: str
    starts_from: _Run | None = None

    @property
    def out_dir(self) -> Path:
        return Path(self.config.run.out_dir)


def _keep(plan: _Plan, file: Path) -> None:
    """Copy a finished run's small record (metrics, seconds) into ``plan.records``, under the same relative path."""
    if plan.records is not None:
        target = plan.records / file.relative_to(plan.out)
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(target, file.read_bytes())


_RECORDS = ("runs/**/metrics.json", "runs/**/seconds.json", f"{LAYOUT_ONLY}/*/metrics.json", "prior_seconds.json")
"""The small files of finished work that ``records`` keeps (relative to the work folder)."""


def _sync_records(plan: _Plan) -> None:
    """Copy records in where the work folder lacks them, and finished runs out where the records lack them.

    Restored runs count as finished; copying out covers runs that finished before ``records`` was given.
    """
    if plan.records is None:
        return
    for record in sorted(r for pattern in _RECORDS for r in plan.records.glob(pattern)):
        target = plan.out / record.relative_to(plan.records)
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(target, record.read_bytes())
    for file in sorted(f for pattern in _RECORDS for f in plan.out.glob(pattern)):
        if not (plan.records / file.relative_to(plan.out)).exists():
            _keep(plan, file)


def _fit(plan: _Plan, run: _Run) -> None:
    """Train ``run`` (after the model it continues and the prior it may need), then keep its records.

    ``seconds.json`` also names the prior the work folder held (a digest of its files): a prior
    retrained on another machine need not be the same bit for bit, and the results say which runs
    came from which.
    """
    from madm_ros.backends.engine_info import folder_sha256
    from madm_train.training.trainer import train

    if run.starts_from is not None:
        _model(plan, run.starts_from)
    _pretrain_prior(plan)
    start = time.perf_counter()
    train(run.config, progress=False)
    seconds = time.perf_counter() - start
    record = {"seconds": seconds, "prior_sha256": folder_sha256(plan.prior)[:16]}
    atomic_write_bytes(run.out_dir / "seconds.json", json.dumps(record).encode())
    print(f"benchmark: {run.label}: {seconds:.0f} s", file=sys.stderr)
    for name in ("metrics.json", "seconds.json"):
        _keep(plan, run.out_dir / name)


def _model(plan: _Plan, run: _Run) -> Path:
    """``run``'s saved model; trained first where its folder has none (a run restored from records has only metrics)."""
    if not (run.out_dir / "model").is_dir():
        _fit(plan, run)
    return run.out_dir / "model"


def _metrics(plan: _Plan, run: _Run) -> dict[str, Any]:
    """``run``'s ``metrics.json``, training it first unless the folder holds one."""
    if not (run.out_dir / "metrics.json").exists():
        _fit(plan, run)
    return json.loads((run.out_dir / "metrics.json").read_text())


def _seconds(out_dir: Path) -> float:
    file = out_dir / "seconds.json"
    return float(json.loads(file.read_text())["seconds"]) if file.exists() else 0.0


def _score(plan: _Plan, run: _Run, config: Any, out_dir: Path) -> dict[str, Any]:
    """Metrics of ``run``'s model on the test split of ``config`` (cached in ``out_dir/metrics.json``)."""
    from madm_ros.palettes import get_label_set
    from madm_train.data.build import build_datasets
    from madm_train.models.saved import load_saved
    from madm_train.training.evaluate import evaluate

    if not (out_dir / "metrics.json").exists():
        _, _, test = build_datasets(config)
        model = load_saved(_model(plan, run))
        evaluate(model.logits, test, get_label_set(config.data.label_set), out_dir, batch_size=config.data.batch_size)
        _keep(plan, out_dir / "metrics.json")
    return json.loads((out_dir / "metrics.json").read_text())


def _layout_only(plan: _Plan, modality: str) -> dict[str, Any]:
    """Metrics of the layout-only baseline on ``modality``'s test split (cached in ``layout_only/eval-<modality>``)."""
    from madm_train.training.layout_baseline import score_layout_baseline

    out_dir = plan.out / LAYOUT_ONLY / f"eval-{modality}"
    if not (out_dir / "metrics.json").exists():  # the training split's labels; no seed, no model
        score_layout_baseline(_config(plan, modality, plan.seeds[0], plan.out / LAYOUT_ONLY, "source_only"), out_dir)
        _keep(plan, out_dir / "metrics.json")
    return json.loads((out_dir / "metrics.json").read_text())


def _check_data(plan: _Plan) -> None:
    """Refuse records made from other synthetic data; the first call writes the data's digest beside them."""
    from madm_ros.backends.engine_info import folder_sha256

    if plan.records is None:
        return
    digests = {"scenes_sha256": folder_sha256(plan.data)[:16], "prior_scenes_sha256": folder_sha256(plan.prior_data)[:16]}
    file = plan.records / "data.json"
    if not file.exists():
        file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(file, (json.dumps(digests, indent=1) + "\n").encode())
    elif (recorded := json.loads(file.read_text())) != digests:
        raise ConfigError(f"the records in {plan.records} were made from other synthetic data ({recorded}; this work "
                          f"folder: {digests}): the generator or the preset changed since. Move that folder away to "
                          "start the benchmark afresh, or use the work folder they came from")


def _generate_data(plan: _Plan) -> None:
    """Generate both synthetic folders, each only if absent (seconds: every score and figure reads them).

    A folder that is there must hold the preset's data: a work folder of an earlier preset or
    generator setting (e.g. street scenes before ``scenes`` became ``varied``) is refused, not reused.
    """
    from madm_ros.synthetic.generate import SynthConfig, generate_once

    p = plan.preset
    height, width = p.generate_hw
    for folder, frames, seed in ((plan.data, p.frames, 0), (plan.prior_data, p.prior_frames, 1)):
        config = SynthConfig(frames=frames, height=height, width=width, seed=seed, scenes=p.scenes)
        generate_once(config, folder, workers=2, progress=True,
                      otherwise=f"not the preset's; give the benchmark another --out, or delete {plan.out} to start afresh")


def _pretrain_prior(plan: _Plan) -> None:
    """Pretrain the prior unless the work folder holds it: only a run that trains needs it (minutes)."""
    from madm_train.training.prior import pretrain_prior

    if not (plan.prior / "prior.json").exists():
        start = time.perf_counter()
        pretrain_prior(plan.prior_data, plan.prior, plan.preset.prior)
        atomic_write_bytes(plan.out / "prior_seconds.json", json.dumps({"seconds": time.perf_counter() - start}).encode())
        _keep(plan, plan.out / "prior_seconds.json")


def _runs_of_seed(plan: _Plan, seed: int) -> dict[str, dict[str | None, _Run]]:
    """Every run of one seed: result key → {modality: run}, with modality ``None`` for the target-free runs."""
    p = plan.preset
    anchor = plan.modalities[0]  # the target-free runs never see target images: any modality's config trains them
    runs: dict[str, dict[str | None, _Run]] = {}
    for prior in (True, False):
        suffix = "" if prior else "_no_prior"
        pretrained = str(plan.prior) if prior else ""
        warmups = {}
        for warmup, (method, warmup_changes) in WARMUPS.items():
            name = ("warmup" if warmup == "source_only" else f"warmup_{warmup}") + suffix
            warmups[warmup] = _Run(_config(plan, anchor, seed, plan.run_dir(seed, name), method, warmup_changes,
                                           {"model": {"pretrained": pretrained}}, max_iter=p.warmup_iters),
                                   f"seed {seed} {name}")
        for key, variant in VARIANTS.items():
            if variant.prior != prior or key not in plan.variants:
                continue
            runs[key] = {}
            for modality in (None,) if variant.target_free else plan.modalities:
                starts_from = runs[variant.after][modality] if variant.after is not None else warmups[variant.warmup]
                model = {"init_weights": str(starts_from.out_dir / "model")}
                if variant.method == "iccld":  # stage 2 takes ε_θ from the prior's UNet
                    model["pretrained"] = pretrained
                folder = run_folder(plan.out, seed, key, modality)
                source_modality = modality if variant.oracle and modality is not None else "rgb"
                config = _config(plan, modality or anchor, seed, folder, variant.method, variant.changes,
                                 {"model": model}, source_modality=source_modality)
                runs[key][modality] = _Run(config, f"seed {seed} {modality or 'all'} {key}", starts_from)
    return runs


def _run_seed(plan: _Plan, seed: int) -> dict[str, dict[str, dict[str, Any]]]:
    """Every result of one seed, training only what is missing; returns {modality: {result key: metrics}}."""
    results: dict[str, dict[str, dict[str, Any]]] = {m: {} for m in plan.modalities}
    for key, runs in _runs_of_seed(plan, seed).items():
        variant = VARIANTS[key]
        for modality in plan.modalities:
            if variant.target_free:  # trained once, scored on every modality
                run = runs[None]
                scored = _config(plan, modality, seed, run.out_dir, variant.method, variant.changes)
                results[modality][key] = _score(plan, run, scored, run.out_dir / f"eval-{modality}")
            else:
                results[modality][key] = _metrics(plan, runs[modality])
    return results


def _summary(per_seed: dict[int, dict[str, dict[str, dict[str, Any]]]], plan: _Plan,
             layout: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Mean and sample standard deviation over seeds of mIoU and per-class IoU, by modality and method.

    ``layout`` (modality → metrics of the layout-only baseline) is added under :data:`LAYOUT_ONLY`
    with the same value for every seed (it depends on none), so its spread is 0. Where both ends ran,
    every row also gets ``gap_closed``: (its mean − source-only's) / (oracle's − source-only's), the
    fraction of the gap to target labels that it closes (0 at source-only, 1 at the oracle).
    """
    summary: dict[str, Any] = {}
    seeds = sorted(per_seed)
    for modality in plan.modalities:
        summary[modality] = {}
        for method in (*METHODS, LAYOUT_ONLY):
            runs = ([layout[modality]] * len(seeds) if method == LAYOUT_ONLY
                    else [per_seed[s][modality][method] for s in seeds if method in per_seed[s][modality]])
            if not runs:
                continue
            mious = [100 * (r["miou"] or 0.0) for r in runs]
            classes = runs[0]["class_names"]
            per_class = {name: float(np.mean([100 * (r["per_class_iou"][name] or 0.0) for r in runs])) for name in classes}
            summary[modality][method] = {
                "miou_mean": float(np.mean(mious)), "miou_std": float(np.std(mious, ddof=1)) if len(mious) > 1 else 0.0,
                "seeds": seeds, "miou_per_seed": mious, "per_class_iou_mean": per_class}
        rows = summary[modality]
        if {"source_only", "oracle"} <= set(rows) and rows["oracle"]["miou_mean"] != rows["source_only"]["miou_mean"]:
            floor, ceiling = rows["source_only"]["miou_mean"], rows["oracle"]["miou_mean"]
            for row in rows.values():
                row["gap_closed"] = (row["miou_mean"] - floor) / (ceiling - floor)
    return summary


_LABELS = {"source_only": "Source only", "madm": "MADM (DPLG + LPLR)", "madm_no_dplg": "MADM without DPLG",
           "madm_no_lplr": "MADM without LPLR", "source_only_no_prior": "Source only, no prior",
           "madm_no_prior": "MADM, no prior", "diff_generalisation": "DIFF, generalisation (source only)",
           "diff": "DIFF, adaptation", "iccld_no_stage2": "ICCLD without stage 2 (E, D self-trained)",
           "iccld": "ICCLD (both stages)", "iccld_no_inter_coder_no_stage2": "ICCLD without inter-coder connections or stage 2",
           "iccld_no_inter_coder": "ICCLD without inter-coder connections", "oracle": "Oracle (target labels)",
           LAYOUT_ONLY: "Layout only (no image)"}


def _cell(row: dict[str, Any]) -> str:
    """``mean ± std`` of one table cell, with the gap closed in brackets where known."""
    gap = f" ({100 * row['gap_closed']:.0f} %)" if "gap_closed" in row else ""
    return f"{row['miou_mean']:.1f} ± {row['miou_std']:.1f}{gap}"


def _markdown(summary: dict[str, Any], plan: _Plan, settings: dict[str, Any]) -> str:
    """The ablation table (mIoU mean ± std over seeds, in %) and the per-class IoU of source-only and MADM."""
    mods = [m for m in plan.modalities if m in summary]
    lines = [f"# Synthetic modality-adaptation benchmark (preset {settings['preset']})", "",
             f"Dataset-level mIoU (%) on the held-out target sequences, mean ± standard deviation over seeds "
             f"{', '.join(map(str, plan.seeds))}; RGB labels only, no target labels, except the oracle "
             "(trained on the target modality's labelled frames). The layout-only row predicts the training labels' "
             "most frequent class at each pixel for every image (no seed, no model). In brackets: the fraction of the "
             "source-only → oracle gap that the row closes (0 % source only, 100 % the oracle).", "",
             "| Method | DPLG | LPLR | prior | " + " | ".join(mods) + " |",
             "|---|---|---|---|" + "---|" * len(mods)]
    marks = {"source_only": ("", "", "✓"), "madm": ("✓", "✓", "✓"), "madm_no_dplg": ("", "✓", "✓"),
             "madm_no_lplr": ("✓", "", "✓"), "source_only_no_prior": ("", "", ""), "madm_no_prior": ("✓", "✓", ""),
             "diff_generalisation": ("", "", "✓"), "diff": ("", "", "✓"),
             **{key: ("", "", "✓") for key in VARIANTS if key.startswith("iccld")}, "oracle": ("", "", "✓"),
             LAYOUT_ONLY: ("", "", "")}
    for method in (LAYOUT_ONLY, *METHODS):
        cells = [_cell(summary[m][method]) if method in summary[m] else "–" for m in mods]
        lines.append(f"| {_LABELS[method]} | " + " | ".join(marks[method]) + " | " + " | ".join(cells) + " |")
    for modality in mods:
        if not {"source_only", "madm"} <= set(summary[modality]):
            continue
        names = list(summary[modality]["madm"]["per_class_iou_mean"])
        lines += ["", f"Per-class IoU (%), {modality}, mean over seeds:", "",
                  "| Method | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for method in [m for m in FIGURE_METHODS if m in summary[modality]]:
            values = summary[modality][method]["per_class_iou_mean"]
            lines.append(f"| {_LABELS[method]} | " + " | ".join(f"{values[n]:.1f}" for n in names) + " |")
    lines += ["", "Settings: " + json.dumps(settings, sort_keys=True), ""]
    return "\n".join(lines)


def _figure(plan: _Plan, modality: str, out_file: Path) -> None:
    """Input | ground truth | source-only | MADM | DIFF | ICCLD (those run) for the first test frames of ``modality``.

    Drawn from the first seed whose models the work folder holds: runs restored from records have
    metrics but no weights, and retraining them for a picture is not worth hours.
    """
    import cv2
    import torch
    import torch.nn.functional as F

    from madm_ros.palettes import colorize, get_label_set
    from madm_train.data.build import build_datasets
    from madm_train.models.saved import load_saved

    def folders(seed: int) -> list[Path]:
        return [run_folder(plan.out, seed, name, modality) / "model" for name in FIGURE_METHODS if name in plan.variants]

    seed = next((s for s in plan.seeds if all(folder.is_dir() for folder in folders(s))), None)
    if seed is None:
        print(f"benchmark: {out_file.name} not drawn: no seed has all its models in {plan.out} (restored from "
              "records); the earlier figure stays", file=sys.stderr)
        return
    print(f"benchmark: {out_file.name} drawn from seed {seed}'s models", file=sys.stderr)
    config = _config(plan, modality, seed, plan.run_dir(seed, modality, "madm"), "madm", {})
    _, _, test = build_datasets(config)
    label_set = get_label_set(config.data.label_set)
    models = [load_saved(folder) for folder in folders(seed)]
    step = max(1, len(test) // FIGURE_FRAMES)
    rows = []
    for index in range(0, step * FIGURE_FRAMES, step):
        sample = test[index]
        image = torch.from_numpy(sample.image[None])
        with torch.no_grad():  # logits at each model's stride (DIFF: 4), compared at the label's size
            predictions = [F.interpolate(m.logits(image), size=image.shape[-2:], mode="bilinear", align_corners=False)
                           .argmax(1)[0].numpy().astype(np.uint8) for m in models]
        rgb = np.rint(sample.image.transpose(1, 2, 0) * 255).astype(np.uint8)
        rows.append(np.concatenate([rgb, colorize(sample.label, label_set), *[colorize(p, label_set) for p in predictions]],
                                   axis=1))
    figure = np.concatenate(rows, axis=0)
    figure = cv2.resize(figure, (figure.shape[1] * 2, figure.shape[0] * 2), interpolation=cv2.INTER_NEAREST)
    ok, data = cv2.imencode(".png", np.ascontiguousarray(figure[:, :, ::-1]))
    if not ok:
        raise ConfigError(f"could not encode {out_file}")
    atomic_write_bytes(out_file, data.tobytes())


def run_benchmark(out: str | Path, *, preset: str = "tiny", seeds: Sequence[int] | None = None,
                  modalities: Sequence[str] = MODALITIES, variants: Sequence[str] | None = None,
                  records: str | Path | None = None) -> dict[str, Any]:
    """Run (or continue) the synthetic benchmark in ``out``; writes results.json, results.md and figures.

    ``variants`` limits the rows (keys of :data:`VARIANTS`; default all), to postpone expensive ones;
    the results then hold those rows only. Finished runs in ``out`` are reused, so a later call with
    every row trains only what is missing.

    ``records``: a folder that keeps each finished run's small files (metrics, seconds) as soon as it
    finishes, and hands them to a fresh ``out`` on the next call, so that a benchmark of many hours
    spans machines whose work folders are gone (only a run whose model is needed again is retrained).
    """
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    unknown = sorted(set(modalities) - set(MODALITIES))
    if unknown or not modalities:
        raise ConfigError(f"modalities must be among {', '.join(MODALITIES)}, got {list(modalities)}")
    unknown = sorted(set(variants or ()) - set(VARIANTS))
    if unknown or (variants is not None and not variants):
        raise ConfigError(f"variants must be among {', '.join(VARIANTS)}, got {list(variants or ())}")
    missing = sorted({VARIANTS[k].after for k in variants or ()} - {None} - set(variants or ()))
    if missing:
        raise ConfigError(f"variants {missing} must run too: the stage-2 rows continue from them")
    p = PRESETS[preset]
    plan = _Plan(Path(out), p, tuple(seeds if seeds is not None else p.seeds), tuple(modalities),
                 tuple(variants) if variants is not None else tuple(VARIANTS), Path(records) if records is not None else None)
    if not plan.seeds:
        raise ConfigError("give at least one seed")
    start = time.perf_counter()
    _generate_data(plan)
    _check_data(plan)
    _sync_records(plan)
    per_seed = {seed: _run_seed(plan, seed) for seed in plan.seeds}
    layout = {modality: _layout_only(plan, modality) for modality in plan.modalities}
    summary = _summary(per_seed, plan, layout)
    runs = sorted(plan.out.glob("runs/seed*/**/seconds.json"))
    prior_file = plan.out / "prior_seconds.json"
    settings = {"preset": preset, **{k: v for k, v in asdict(p).items() if k != "seeds"}, "seeds": list(plan.seeds),
                "modalities": list(plan.modalities),
                "training_seconds": round(sum(_seconds(f.parent) for f in runs)),
                "prior_seconds": round(json.loads(prior_file.read_text())["seconds"]) if prior_file.exists() else None,
                "runs_by_prior_sha256": dict(Counter(json.loads(f.read_text()).get("prior_sha256", "not recorded")
                                                     for f in runs)),
                "this_call_seconds": round(time.perf_counter() - start)}
    result = {**summary, "settings": settings}
    atomic_write_bytes(plan.out / "results.json", (json.dumps(result, indent=1) + "\n").encode())
    atomic_write_bytes(plan.out / "results.md", _markdown(summary, plan, settings).encode())
    for modality in plan.modalities:
        _figure(plan, modality, plan.out / f"figure_{modality}.png")
    return result
