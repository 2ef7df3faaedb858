"""``python -m madm_ros.bag_eval``: the arguments, and every error as one line with exit code 2."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from madm_ros.backends import BACKEND_CHOICES
from madm_ros.bag_eval.options import OUTPUT_BAG_FORMATS, EvalOptions
from madm_ros.bag_eval.report import fmt
from madm_ros.bag_eval.run import evaluate_bag
from madm_ros.errors import MadmError
from madm_ros.palettes import LABEL_MAPPING_SOURCES

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The ``--help`` of ``python -m madm_ros.bag_eval``."""
    parser = argparse.ArgumentParser(
        prog="python -m madm_ros.bag_eval",
        description="Run a segmentation node's pipeline over a depth, thermal or event topic of a bag (rosbag2 sqlite3 "
                    "or mcap, rosbag1), score the masks against labels and write report.md, report.json, plots, "
                    "overlays and a bag of masks, colour masks, overlays and edge frames. No ROS installation is needed.",
        epilog="Labels: --label-topic (sensor_msgs/Image mono8 class ids, 255 = ignore, stamped like the frames) or "
               "--label-dir (PNG class ids named <stamp_ns>.png or <sec>_<nanosec>.png). Each label is scored against "
               "the frame with the nearest stamp within --tolerance-ms; a frame is scored against its nearest label "
               "only. Outputs: a non-empty --out is refused unless --overwrite, which replaces only what bag_eval "
               "wrote there (listed in OUT/.bag_eval.json). Only a run that succeeds (exit code 0) replaces an "
               "earlier report; any other leaves it byte for byte. Exit codes: 0 done; 2 bad input or a topic "
               "without a usable frame (nothing written), an output that cannot be written (this run's output "
               "removed), or an error part way, a bag that broke off or no label that could be scored (what was "
               "evaluated is kept in OUT/failed); 1 an unexpected error, a bug (kept in OUT/failed with "
               "traceback.txt); 130 Ctrl-C (kept in OUT/interrupted). A run stopped before its first frame keeps "
               "nothing.",
    )
    parser.add_argument("bag", type=Path, help="bag folder, or a single .mcap/.db3/.bag file")
    parser.add_argument("--out", type=Path, default=Path("bag_eval_out"), help="output folder (default: bag_eval_out)")
    parser.add_argument("--overwrite", action="store_true", help="replace bag_eval's earlier outputs in --out (other "
                        "files there stay)")
    parser.add_argument("--config", type=Path, help="the node's parameter file (config/events.yaml, depth.yaml, "
                        "thermal.yaml or your copy): the same settings as the node; default: the node's defaults")
    parser.add_argument("--model", help="model file; overrides model_file_path (default: the built-in model)")
    parser.add_argument("--backend", choices=BACKEND_CHOICES, help="overrides backend")
    parser.add_argument("--threads", type=int, help="ONNX Runtime CPU threads (0 = one per core); overrides threads")
    parser.add_argument("--topic", help="input topic (default: the bag's only depth, thermal or event topic)")
    labels = parser.add_mutually_exclusive_group()
    labels.add_argument("--label-topic", help="label image topic in the same bag")
    labels.add_argument("--label-dir", type=Path, help="folder of label PNGs named by stamp")
    parser.add_argument("--label-set", choices=LABEL_MAPPING_SOURCES,
                        help="label ids are of this set and are mapped to the model's (default: already the model's)")
    parser.add_argument("--tolerance-ms", type=float, help="largest label-to-frame stamp distance (default: 1 ms for "
                        "images, half the accumulation window for time-sliced events, 25 ms for count-sliced ones)")
    parser.add_argument("--output-bag-format", choices=OUTPUT_BAG_FORMATS, default="sqlite3",
                        help="storage of OUT/output_bag (default sqlite3; none: no bag)")
    parser.add_argument("--output-prefix", help="namespace of the output topics (default: /<node name>, e.g. "
                        "/event_segmentation, like the node's private topics)")
    parser.add_argument("--overlays", type=int, default=24, metavar="N", help="write the overlays of N evenly spaced "
                        "frames to OUT/overlays/ and a contact sheet OUT/overlays.png (default 24; 0: none)")
    parser.add_argument("--max-frames", type=int, help="stop after this many frames")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; returns the exit code (see the epilog: 0 done, 1 a bug, 2 bad input, 130 Ctrl-C)."""
    args = build_parser().parse_args(argv)
    try:
        options = EvalOptions(bag=args.bag, out=args.out, config=args.config, model=args.model, backend=args.backend,
                              threads=args.threads, topic=args.topic, label_topic=args.label_topic, label_dir=args.label_dir,
                              tolerance_ms=args.tolerance_ms, label_set=args.label_set, output_bag_format=args.output_bag_format,
                              output_prefix=args.output_prefix, max_frames=args.max_frames, overlays=args.overlays,
                              overwrite=args.overwrite, progress=not args.no_progress and sys.stderr.isatty())
        report = evaluate_bag(options)
    except MadmError as error:
        print(f"bag_eval: {error}", file=sys.stderr)
        return 2
    if not report.get("labels_scored"):
        miou = "no labels scored"
    else:
        miou = f"mIoU {fmt(report['miou'], scale=100)} % over {report['labels_scored']} labels"
    written = args.out if report["exit_code"] == 0 else report.get("kept_in")
    print(f"{report['frames']} frames, {miou}, processing p50 {fmt(report['latency_ms_p50'])} ms, "
          f"p99 {fmt(report['latency_ms_p99'])} ms; " + (f"report in {Path(written) / 'report.md'}" if written
                                                         else "nothing written"))
    for key in ("read_note", "modality_note", "model_caveat"):
        if report.get(key):
            print(f"note: {report[key]}", file=sys.stderr)
    error = report.get("error") or ""
    for warning in report.get("warnings", []):
        if warning["message"] not in error:
            print(f"warning: {warning['message']} (×{warning['count']})", file=sys.stderr)
    if report["exit_code"] != 0:  # one line: what stopped the run, and where its output is
        line = error or f"partial results: {report['stopped_early']}"
        if report.get("kept_in"):
            line += f"; their report and output are kept in {report['kept_in']}, the rest of --out {args.out} is as it was"
        print(f"bag_eval: {line}", file=sys.stderr)
    return int(report["exit_code"])
