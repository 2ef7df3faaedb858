"""Command line of ``python -m madm_train``: a small table of subcommands, each parsing into one typed call.

Every subcommand is a pair of functions in :data:`COMMANDS`: one adds its arguments to an
``argparse`` sub-parser, the other turns the parsed namespace into a config and calls the typed
library function that tests call directly. :class:`~madm_ros.errors.MadmError` becomes a one-line
message on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from madm_ros.errors import ConfigError, MadmError

__all__ = ["COMMANDS", "main", "parse_size"]


def parse_size(text: str) -> tuple[int, int]:
    """``"256x512"`` → ``(256, 512)`` (height × width, positive integers)."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", text)
    if match is None or int(match.group(1)) == 0 or int(match.group(2)) == 0:
        raise ConfigError(f"--size must be HEIGHTxWIDTH with positive integers, e.g. 256x512, got {text!r}")
    return int(match.group(1)), int(match.group(2))


def _synth_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path, help="output folder (new, empty or an earlier synth output)")
    parser.add_argument("--frames", type=int, default=200, help="number of labelled frames (default 200)")
    parser.add_argument("--size", default="256x512", help="HEIGHTxWIDTH of every image (default 256x512)")
    parser.add_argument("--seed", type=int, default=0, help="seed; same seed and options give identical files")
    parser.add_argument("--frames-per-sequence", type=int, default=10, help="frames per street (default 10)")
    parser.add_argument("--night-probability", type=float, default=0.2, help="chance of a night sequence (default 0.2)")
    parser.add_argument("--scenes", default="street", choices=("street", "varied"),
                        help="street: one straight street seen from nearly one pose (default); varied: streets, "
                             "junctions and open areas with varied camera pose, road shape, objects, light and sensors "
                             "(madm_ros/synthetic/variety.py lists the ranges)")
    parser.add_argument(
        "--modalities",
        default="rgb,depth,thermal,events",
        help="comma-separated modality folders to write (labels always; default all four)",
    )
    parser.add_argument("--workers", type=int, default=1, help="processes rendering sequences in parallel (default 1)")
    parser.add_argument(
        "--overwrite", action="store_true", help="also write into a non-empty folder that holds no earlier synth output"
    )


def _synth(args: argparse.Namespace) -> int:
    from madm_ros.synthetic import SynthConfig, generate

    height, width = parse_size(args.size)
    config = SynthConfig(
        frames=args.frames,
        height=height,
        width=width,
        seed=args.seed,
        frames_per_sequence=args.frames_per_sequence,
        night_probability=args.night_probability,
        scenes=args.scenes,
        modalities=tuple(m.strip() for m in args.modalities.split(",") if m.strip()),
    )
    print(
        f"synth: {config.frames} frames of {height}x{width} in {config.sequences} sequences, seed {config.seed}, "
        f"modalities {', '.join(config.modalities)} -> {args.out}",
        file=sys.stderr,
    )
    started = time.perf_counter()
    out = generate(config, args.out, overwrite=args.overwrite, workers=args.workers, progress=True)
    seconds = time.perf_counter() - started
    print(f"synth: wrote {out} in {seconds:.1f} s ({config.frames / seconds:.2f} frames/s)", file=sys.stderr)
    return 0


def _load_config(path: Path, overrides: Sequence[str], command: str, *, wait: bool = False) -> Any:
    """``load_config`` plus the bag-derived target set of ``data.target_bag`` (extracted, or reused)."""
    from madm_train.config import load_config
    from madm_train.data.bag_target import prepare_bag_target

    def say(text: str) -> None:
        print(f"{command}: {text}", file=sys.stderr)

    config = load_config(path, overrides)
    target = prepare_bag_target(config, wait=wait, log=None if wait else say)
    if target is None or wait:
        return config
    d = config.data
    kind = f" ({target.message_type})" if target.message_type else ""
    say(f"target set: {target.frames} frames of {d.target_topic}{kind} from {d.target_bag} in {target.target}")
    if target.test is not None:
        unmatched = (f"; {target.unmatched_labels} of {target.labels} labels matched no frame within "
                     f"{target.tolerance_us / 1000:g} ms") if target.unmatched_labels else ""
        say(f"evaluation split: {target.labelled} frames labelled by {d.target_label_topic} in {target.test}{unmatched}")
        if target.transductive:
            say("every frame of the bag is labelled: adapting to the evaluation frames too (transductive; "
                "their labels are never trained on)")
    elif Path(d.test_root) == target.target:
        say("no label topic (--target-label-topic): no target evaluation; metrics will hold no mIoU")
    else:
        say(f"evaluation split: {d.test_root}")
    return config


def _bag_overrides(args: argparse.Namespace) -> list[str]:
    """``--target-bag`` and friends as the ``--set data.…=`` overrides they stand for (quoted: any text stays text)."""
    pairs = (("target_bag", args.target_bag), ("target_topic", args.target_topic),
             ("target_label_topic", args.target_label_topic))
    return [f"data.{key}={json.dumps(str(value))}" for key, value in pairs if value is not None]


def _adapt_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, type=Path,
                        help="training YAML (config/train/*.yaml); every key maps to a field of madm_train.config")
    parser.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                        help="override config keys, e.g. --set optim.max_iter=2000 run.device=cpu (repeatable)")
    parser.add_argument("--resume", default=None,
                        help="'latest' (newest checkpoint of the run folder; starts fresh if none), a checkpoint name or path")
    parser.add_argument("--target-bag", default=None, metavar="BAG",
                        help="adapt to the frames of a rosbag2 (folder or file): same as --set data.target_bag=BAG")
    parser.add_argument("--target-topic", default=None, metavar="TOPIC",
                        help="the bag's depth/thermal image or event topic (data.target_topic); frames are extracted "
                             "through the nodes' own decoding into <run>/bag_target (data.target_bag_cache)")
    parser.add_argument("--target-label-topic", default=None, metavar="TOPIC",
                        help="mono8 label images (class ids, 255 ignore) matched to frames by header stamp "
                             "(data.target_label_topic): those frames are the evaluation split")


def _adapt(args: argparse.Namespace) -> int:
    overrides = list(args.overrides) + ([f"run.resume={args.resume}"] if args.resume else []) + _bag_overrides(args)
    config = _load_config(args.config, overrides, "adapt", wait=os.environ.get("LOCAL_RANK", "0") != "0")
    from madm_train.training.trainer import train  # torch: after the config and target set are known to be usable

    try:
        run_dir = train(config, progress=True)
    except KeyboardInterrupt:  # Ctrl-C: one line saying what is kept and how to go on, not a traceback
        from madm_train.training.checkpoints import list_checkpoints
        from madm_train.training.trainer import CHECKPOINTS

        kept = list_checkpoints(Path(config.run.out_dir) / CHECKPOINTS)
        print("adapt: interrupted; " + (f"the newest checkpoint is {kept[-1]}: continue with --resume latest"
                                         if kept else "no checkpoint was written yet"), file=sys.stderr)
        return 130
    if os.environ.get("RANK", "0") == "0":  # under torchrun only the writing process reports
        print(f"adapt: finished; model, checkpoints and metrics.json in {run_dir}", file=sys.stderr)
    return 0


def _evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, type=Path, help="the training YAML of the run (names the test split)")
    parser.add_argument("--model", required=True, type=Path, help="a saved model folder (a run's model/ or a distilled student/)")
    parser.add_argument("--out", required=True, type=Path, help="folder for metrics.json, metrics.md and qualitative PNGs")
    parser.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                        help="override config keys (repeatable; several KEY=VALUE per --set)")


def _evaluate(args: argparse.Namespace) -> int:
    import torch

    from madm_ros.palettes import get_label_set
    from madm_train.data.build import build_datasets
    from madm_train.models.saved import load_saved
    from madm_train.training.evaluate import evaluate

    config = _load_config(args.config, args.overrides, "evaluate")
    _, _, test = build_datasets(config)
    model = load_saved(args.model)
    device = torch.device("cuda" if config.run.device == "cuda" and torch.cuda.is_available() else "cpu")
    model.network.to(device)
    metrics = evaluate(lambda x: model.logits(x.to(device)), test, get_label_set(config.data.label_set), args.out,
                       batch_size=config.data.batch_size, progress=True, eval_classes=config.data.eval_classes)
    print(f"evaluate: mIoU {100 * (metrics['miou'] or 0):.2f} over {metrics['images']} images -> {args.out}",
          file=sys.stderr)
    return 0


def _distill_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--teacher", required=True, type=Path,
                        help="the adapted teacher's model folder (adapt's <run>/model: MADM, DIFF or ICCLD)")
    parser.add_argument("--config", required=True, type=Path,
                        help="the training YAML of the teacher (names modality, label set and target frames)")
    parser.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                        help="override keys of the training config (repeatable; several KEY=VALUE per --set)")
    parser.add_argument("--out", required=True, type=Path, help="run folder for student/, log.jsonl and distill.json")
    parser.add_argument("--size", default=None, help="HEIGHTxWIDTH the student trains at (default: the config's crop size)")
    parser.add_argument("--channels", type=int, default=24,
                        help="student base width (32 = DDRNet-23-slim; default 24, which meets 50 ms at 480x640 on 2 CPU cores)")
    parser.add_argument("--iterations", type=int, default=4000, help="optimiser steps (default 4000)")
    parser.add_argument("--batch-size", type=int, default=8, help="frames per step (default 8)")
    parser.add_argument("--lr", type=float, default=2e-3, help="AdamW peak learning rate (default 2e-3)")
    parser.add_argument("--temperature", type=float, default=2.0, help="τ of the pixel-wise KL (default 2)")
    parser.add_argument("--kd-weight", type=float, default=1.0, help="weight of the pixel-wise KL (default 1)")
    parser.add_argument("--ce-weight", type=float, default=1.0, help="weight of the pseudo-label CE (default 1)")
    parser.add_argument("--confidence", type=float, default=0.968, help="pseudo-label confidence threshold (default 0.968)")
    parser.add_argument("--source-weight", type=float, default=0.0,
                        help="weight of CE on the labelled source frames (default 0: target frames only)")
    parser.add_argument("--cache", type=Path, default=None, help="teacher-logit cache folder (default <out>/teacher_cache)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--seed", type=int, default=0, help="seed of weights, batch order and flips")


def _distill(args: argparse.Namespace) -> int:
    from madm_ros.preprocessing import InputSpec
    from madm_train.data.build import build_datasets
    from madm_train.deploy.distill import DistillOptions, at_size, distill

    config = _load_config(args.config, args.overrides, "distill")
    size = parse_size(args.size) if args.size else tuple(config.data.crop_hw)
    source, target, test = build_datasets(config)
    options = DistillOptions(
        teacher=args.teacher, out_dir=args.out, label_set=config.data.label_set,
        input_spec=InputSpec(config.data.modality, height=size[0], width=size[1]), channels=args.channels,
        iterations=args.iterations, batch_size=args.batch_size, lr=args.lr, temperature=args.temperature,
        kd_weight=args.kd_weight, ce_weight=args.ce_weight, confidence=args.confidence, source_weight=args.source_weight,
        cache_dir=args.cache, device=args.device, seed=args.seed,
    )
    report = distill(options, at_size(target, size), source=at_size(source, size) if args.source_weight > 0 else None,
                     test=at_size(test, size), progress=True)
    final = report["final"]
    print(f"distill: student in {report['student']}; teacher agreement {100 * report['initial']['teacher_agreement']:.1f} % "
          f"-> {100 * final['teacher_agreement']:.1f} %" +
          (f", test mIoU {100 * (report['test_miou'] or 0):.2f}" if "test_miou" in report else ""), file=sys.stderr)
    return 0


def _export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--student", required=True, type=Path, help="a distilled student folder (distill's <out>/student)")
    parser.add_argument("--out", required=True, type=Path, help="folder for the ONNX files, engines and export.json")
    parser.add_argument("--size", default=None, help="HEIGHTxWIDTH of the static ONNX (default: the student's size)")
    parser.add_argument("--argmax-stride", type=int, default=4, choices=(1, 2, 4, 8),
                        help="resolution divisor of the in-graph arg-max (8: the logits' own, 1: full resolution; default 4)")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset, at least 17 (default 17)")
    parser.add_argument("--config", type=Path, default=None,
                        help="training YAML whose target frames are the real inputs of the parity check and INT8 calibration")
    parser.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                        help="override keys of that config (repeatable; several KEY=VALUE per --set)")
    parser.add_argument("--frames", type=int, default=16, help="real frames for parity and calibration (default 16)")
    parser.add_argument("--tensorrt", default="", help="comma-separated engine precisions to build: fp32, fp16, int8")
    parser.add_argument("--builder", default="onnx", choices=("onnx", "torch2trt"),
                        help="TensorRT's ONNX parser (default) or torch2trt from the PyTorch student")
    parser.add_argument("--no-simplify", action="store_true", help="skip onnxslim")


def _export(args: argparse.Namespace) -> int:
    import numpy as np

    from madm_train.deploy.export import ExportOptions, export

    size = parse_size(args.size) if args.size else None
    precisions = tuple(p.strip() for p in args.tensorrt.split(",") if p.strip())
    frames = None
    if args.config is not None:
        from madm_train.data.build import build_datasets
        from madm_train.deploy.distill import at_size
        from madm_train.deploy.pytorch_backend import load_graph

        spec = load_graph(args.student)[1].input_spec
        _, target, _ = build_datasets(_load_config(args.config, args.overrides, "export"))
        target = at_size(target, size or (spec.height, spec.width))
        frames = np.stack([target[i].image for i in range(min(args.frames, len(target)))])
    report = export(ExportOptions(student=args.student, out_dir=args.out, size=size, argmax_stride=args.argmax_stride,
                                  opset=args.opset, frames=frames, tensorrt=precisions, builder=args.builder,
                                  simplify=not args.no_simplify))
    print(f"export: done; report in {args.out / 'export.json'} ({len(report['engines'])} engines)", file=sys.stderr)
    return 0


def _prior_arguments(parser: argparse.ArgumentParser) -> None:
    from madm_train.training.prior import PriorConfig

    d = PriorConfig()
    parser.add_argument("--data", required=True, type=Path,
                        help="a synthetic folder (python -m madm_train synth); generate it with another seed than the "
                             "evaluation data so the prior never sees a test scene")
    parser.add_argument("--out", required=True, type=Path, help="diffusers folder to write (replaced atomically); "
                        "use it as method.model.pretrained with method.model.preset=tiny")
    parser.add_argument("--crop", type=int, default=d.crop, help=f"side of the square training crops (default {d.crop})")
    parser.add_argument("--vae-steps", type=int, default=d.vae_steps, help=f"autoencoder steps (default {d.vae_steps})")
    parser.add_argument("--unet-steps", type=int, default=d.unet_steps,
                        help=f"latent-denoiser steps (default {d.unet_steps})")
    parser.add_argument("--batch-size", type=int, default=d.batch_size, help=f"images per step (default {d.batch_size})")
    parser.add_argument("--seed", type=int, default=d.seed, help=f"seed of the initial weights and draws (default {d.seed})")


def _prior(args: argparse.Namespace) -> int:
    from madm_train.training.prior import PriorConfig, pretrain_prior

    config = PriorConfig(crop=args.crop, vae_steps=args.vae_steps, unet_steps=args.unet_steps,
                         batch_size=args.batch_size, seed=args.seed)
    out = pretrain_prior(args.data, args.out, config)
    print(f"pretrain-prior: wrote {out}", file=sys.stderr)
    return 0


def _benchmark_arguments(parser: argparse.ArgumentParser) -> None:
    from madm_train.benchmark import MODALITIES, PRESETS, VARIANTS

    parser.add_argument("--suite", required=True, choices=["synthetic"],
                        help="which benchmark: synthetic = MADM, DIFF and ICCLD vs source-only with ablations on generated "
                             "scenes, between a layout-only floor and a target-labelled oracle")
    parser.add_argument("--out", required=True, type=Path,
                        help="folder for data, prior, runs, results.json, results.md and figures; finished runs in it "
                             "are reused, so a stopped benchmark continues")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny",
                        help="tiny: the 2-core CPU run (about 1.5 h); gpu: larger scenes and longer runs on one GPU")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="training seeds (default 0 1 2)")
    parser.add_argument("--modalities", nargs="+", choices=MODALITIES, default=list(MODALITIES),
                        help="target modalities (default all three)")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=None, metavar="ROW",
                        help=f"table rows to run (default all: {', '.join(VARIANTS)}); the results hold these rows; a "
                             "later call with all rows reuses the finished runs")
    parser.add_argument("--records", type=Path, default=None,
                        help="folder that keeps every finished run's metrics and seconds (small JSON files) and restores "
                             "them into a fresh --out: a benchmark of many hours spans machines; commit it between them")


def _benchmark(args: argparse.Namespace) -> int:
    from madm_train.benchmark import run_benchmark

    run_benchmark(args.out, preset=args.preset, seeds=args.seeds, modalities=args.modalities, variants=args.variants,
                  records=args.records)
    print((args.out / "results.md").read_text(encoding="utf-8"))
    return 0


def _convert_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path, help="the .ckpt file to convert (nothing in it is run)")
    parser.add_argument(
        "--out", type=Path, default=None, help="the .safetensors file to write (default: the input's name with .safetensors)"
    )


def _convert(args: argparse.Namespace) -> int:
    from madm_train.models.stable_diffusion import convert_checkpoint

    out = args.out if args.out is not None else args.checkpoint.with_suffix(".safetensors")
    report = convert_checkpoint(args.checkpoint, out)
    print(
        f"convert-checkpoint: wrote {report.path}: {report.tensors} tensors of the state dict"
        + (f", {report.dropped} non-tensor entries left out" if report.dropped else ""),
        file=sys.stderr,
    )
    if report.refused_globals:
        print(
            "convert-checkpoint: not rebuilt (placeholders, nothing run): " + ", ".join(report.refused_globals),
            file=sys.stderr,
        )
    return 0


COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {
    "synth": ("generate a synthetic multi-modal street data set with labels", _synth_arguments, _synth),
    "adapt": ("adapt a segmenter from labelled RGB to a target modality with the config's method (MADM, DIFF, ICCLD, "
              "source-only)", _adapt_arguments, _adapt),
    "evaluate": ("score a saved model on the target test split of a training config", _evaluate_arguments, _evaluate),
    "distill": ("train a real-time student on target frames labelled by the adapted teacher (MADM, DIFF or ICCLD)",
                _distill_arguments, _distill),
    "export": ("export a student to ONNX (parity-checked) and optionally TensorRT engines", _export_arguments, _export),
    "pretrain-prior": ("train the tiny preset's diffusion prior (VAE, then latent denoiser) on synthetic frames",
                       _prior_arguments, _prior),
    "convert-checkpoint": ("convert a pickled .ckpt (e.g. Lightning-era SD) into a tensors-only .safetensors without "
                           "running anything from it", _convert_arguments, _convert),
    "benchmark": ("MADM, DIFF and ICCLD vs source-only with ablations on regenerable synthetic scenes: a table over seeds",
                  _benchmark_arguments, _benchmark),
}
"""Subcommand name → (help, add its arguments, run it)."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m madm_train", description="MADM modality adaptation tools.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, add_arguments, _) in COMMANDS.items():
        add_arguments(subparsers.add_parser(name, help=help_text, description=help_text))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; returns the exit code (2 for usage errors, ``MadmError`` and unusable paths)."""
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command][2](args)
    except (MadmError, OSError) as error:  # OSError: e.g. --out on a read-only disk; one line, no traceback
        print(f"madm_train {args.command}: error: {error}", file=sys.stderr)
        return 2
