"""Command line of ``python -m madm_train``: a small table of subcommands, each parsing into one typed call.

Every subcommand is a pair of functions in :data:`COMMANDS`: one adds its arguments to an
``argparse`` sub-parser, the other turns the parsed namespace into a config and calls the typed
library function that tests call directly. :class:`~madm_ros.errors.MadmError` becomes a one-line
message on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

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
    from madm_train.synthetic import SynthConfig, generate

    height, width = parse_size(args.size)
    config = SynthConfig(
        frames=args.frames,
        height=height,
        width=width,
        seed=args.seed,
        frames_per_sequence=args.frames_per_sequence,
        night_probability=args.night_probability,
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


def _adapt_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, type=Path,
                        help="training YAML (config/train/*.yaml); every key maps to a field of madm_train.config")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config key, e.g. --set optim.max_iter=2000 (repeatable)")
    parser.add_argument("--resume", default=None,
                        help="'latest' (newest checkpoint of the run folder; starts fresh if none), a checkpoint name or path")


def _adapt(args: argparse.Namespace) -> int:
    from madm_train.config import load_config
    from madm_train.self_training import adapt

    overrides = list(args.overrides) + ([f"run.resume={args.resume}"] if args.resume else [])
    config = load_config(args.config, overrides)
    run_dir = adapt(config, progress=True)
    if os.environ.get("RANK", "0") == "0":  # under torchrun only the writing process reports
        print(f"adapt: finished; model, checkpoints and metrics.json in {run_dir}", file=sys.stderr)
    return 0


def _evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, type=Path, help="the training YAML of the run (names the test split)")
    parser.add_argument("--model", required=True, type=Path, help="a saved model folder (a run's model/)")
    parser.add_argument("--out", required=True, type=Path, help="folder for metrics.json, metrics.md and qualitative PNGs")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config key (repeatable)")


def _evaluate(args: argparse.Namespace) -> int:
    import torch

    from madm_ros.palettes import get_label_set
    from madm_train.config import load_config
    from madm_train.evaluate import evaluate
    from madm_train.model import MadmModel
    from madm_train.self_training import build_datasets

    config = load_config(args.config, args.overrides)
    _, _, test = build_datasets(config)
    model = MadmModel.load(args.model).eval()
    device = torch.device(config.run.device)
    model.to(device)
    metrics = evaluate(lambda x: model(x.to(device))[0], test, get_label_set(config.data.label_set), args.out,
                       batch_size=config.data.batch_size, progress=True)
    print(f"evaluate: mIoU {100 * (metrics['miou'] or 0):.2f} over {metrics['images']} images -> {args.out}",
          file=sys.stderr)
    return 0


COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {
    "synth": ("generate a synthetic multi-modal street data set with labels", _synth_arguments, _synth),
    "adapt": ("adapt a segmenter from labelled RGB to a target modality with MADM self-training", _adapt_arguments,
              _adapt),
    "evaluate": ("score a saved model on the target test split of a training config", _evaluate_arguments, _evaluate),
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
