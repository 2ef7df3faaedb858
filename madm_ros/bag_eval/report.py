"""The files of a report: ``report.json``, ``report.md``, the figures, the overlay sample and its contact sheet.

Everything is written into the run's staging folder with :mod:`madm_ros.atomic_io` (the output
folder policy swaps it into ``--out``); an ``OSError`` (disk full, read-only folder) propagates
to the caller, which removes the run's partial output.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from madm_ros.bag_eval.state import RunState
from madm_ros.metrics import json_ready

__all__ = ["fmt", "markdown", "write_report"]


def fmt(value: Any, digits: int = 2, scale: float = 1.0) -> str:
    """A number for people (``–`` for none)."""
    return "–" if value is None else f"{scale * value:.{digits}f}"


def _write_overlays(folder: Path, run: RunState, segmenter: Any, truths: dict[int, np.ndarray]) -> list[str]:
    """``overlays/<stamp_ns>.png`` for the sampled frames and the contact sheet ``overlays.png``; the file names."""
    from madm_ros import atomic_io
    from madm_ros.eval_plots import contact_sheet_figure
    from madm_ros.palettes import colorize

    chosen = run.overlays.chosen()
    if not chosen:
        return []
    (folder / "overlays").mkdir(exist_ok=True)
    names, tiles, captions = [], [], []
    first = run.frame_stamps[0] if run.frame_stamps else chosen[0][1]
    for index, stamp, overlay in chosen:
        name = f"overlays/{stamp}.png" if f"overlays/{stamp}.png" not in names else f"overlays/{stamp}_{index}.png"
        atomic_io.atomic_write_png(folder / name, overlay)
        names.append(name)
        truth = truths.get(index)
        if truth is not None and segmenter is not None:
            tiles.append([overlay, colorize(truth, segmenter.label_set)])
            captions.append(f"{stamp} ns (+{(stamp - first) / 1e9:.2f} s): mask | label")
        else:
            tiles.append([overlay])
            captions.append(f"{stamp} ns (+{(stamp - first) / 1e9:.2f} s)")
    title = f"Segmentation overlays: {len(chosen)} of {run.frames} frames, evenly spaced"
    atomic_io.atomic_write_png(folder / "overlays.png", contact_sheet_figure(
        tiles, captions, title, columns=3 if truths else 4, label_set=segmenter.label_set if segmenter else None))
    return names


def write_report(folder: Path, report: dict[str, Any], run: RunState, matrix: Any, segmenter: Any,
                 truths: dict[int, np.ndarray]) -> None:
    """Write every report file into ``folder`` (``OSError`` when a write fails); adds the files' names to ``report``."""
    from madm_ros import atomic_io
    from madm_ros.eval_plots import confusion_figure, iou_bars_figure, latency_figure

    figures: list[tuple[str, str]] = []
    if segmenter is not None and matrix is not None and report.get("labels_scored"):
        names = list(segmenter.label_set.class_names)
        iou = [report["per_class_iou"][n] for n in names]
        atomic_io.atomic_write_png(folder / "iou.png", iou_bars_figure(
            names, iou, segmenter.label_set.palette(), f"IoU per class (%), mIoU {100 * (report['miou'] or 0):.2f}"))
        atomic_io.atomic_write_png(folder / "confusion.png", confusion_figure(matrix.matrix, names, "Confusion matrix"))
        figures += [("IoU per class", "iou.png"), ("Confusion matrix", "confusion.png")]
    if run.latencies_ms:
        atomic_io.atomic_write_png(folder / "latency.png", latency_figure(run.latencies_ms, "Processing time per frame"))
        figures.append(("Processing time per frame", "latency.png"))
    overlays = _write_overlays(folder, run, segmenter, truths)
    report.update(figures=[name for _, name in figures], overlays=overlays,
                  contact_sheet="overlays.png" if overlays else None)
    ready = json_ready(report)
    atomic_io.atomic_write_bytes(folder / "report.json", (json.dumps(ready, indent=1) + "\n").encode())
    atomic_io.atomic_write_bytes(folder / "report.md", markdown(ready, matrix, segmenter, figures).encode())


def markdown(report: dict[str, Any], matrix: Any, segmenter: Any, figures: list[tuple[str, str]]) -> str:
    """``report.md``: the run at a glance, warnings, figures, overlays and how to play the output bag."""
    lines = [f"# Offline evaluation of `{report['bag']}`", ""]
    if report.get("error"):
        lines += [f"**Stopped:** {report['error']}", ""]
    elif report.get("stopped_early"):
        lines += [f"**Partial results:** {report['stopped_early']}", ""]
    if report.get("model_caveat"):
        lines += [f"> **Caveat — synthetic-only model.** {report['model_caveat']}.", ""]
    if report.get("modality_note"):
        lines += [f"> **Modality guessed.** {report['modality_note']}.", ""]
    if report.get("read_note"):
        lines += [f"> **Bag read with repairs.** {report['read_note']}", ""]
    model = report.get("model") or {}
    stopped = " (stopped at --max-frames)" if report.get("max_frames_reached") else ""
    lines += ["| | |", "| --- | --- |",
              f"| topic | `{report.get('topic', '–')}` ({report.get('msgtype', '–')}, {report.get('storage', '–')}) |",
              f"| model | `{model.get('path', '–')}` on {model.get('backend', '–')} ({report.get('label_set', '–')}) |",
              f"| messages read | {report['messages']} |",
              f"| frames segmented | {report['frames']}{stopped} |",
              f"| frames without any valid pixel (mask all unlabelled) | {report.get('invalid_frames', 0)} |",
              f"| inputs dropped (unusable) | {report['dropped']} |",
              f"| drops at the recorded rate (estimate, one inference thread) | {report['dropped_realtime_estimate']} |",
              f"| processing time p50 / p99 | {fmt(report['latency_ms_p50'])} / {fmt(report['latency_ms_p99'])} ms "
              f"({report.get('processing_covers', '–')}) |",
              f"| inference p50 | {fmt(report['inference_ms_p50'])} ms |"]
    if report.get("labels"):
        lines += [f"| labels / scored / without frame / sharing a frame | {report['labels']} / {report['labels_scored']} / "
                  f"{report['labels_unmatched']} / {report.get('labels_sharing_frame', 0)} (±{report.get('tolerance_ms')} ms) |",
                  f"| **mIoU** | **{fmt(report['miou'], scale=100)} %** |",
                  f"| pixel accuracy | {fmt(report['pixel_accuracy'], scale=100)} % |"]
    lines.append("")
    if matrix is not None and segmenter is not None and report.get("labels_scored"):
        lines += ["## IoU per class", "", matrix.table(list(segmenter.label_set.class_names)), ""]
    if report.get("warnings"):
        lines += ["## Warnings", ""] + [f"- `{w['kind']}` ×{w['count']}: {w['message']}".rstrip(": ")
                                         for w in report["warnings"]] + [""]
    if figures:
        lines += ["## Figures", ""] + [f"![{title}]({name})" for title, name in figures] + [""]
    if report.get("overlays"):
        beside = ", with its label beside each frame that was scored" if report.get("labels") else ""
        lines += ["## Overlays", "", f"{len(report['overlays'])} evenly spaced frames (`--overlays`){beside}:", "",
                  "![Overlays](overlays.png)", "",
                  " · ".join(f"[{Path(name).stem}]({name})" for name in report["overlays"]), ""]
    bag = report.get("output_bag")
    if bag:
        lines += ["## Output bag", "", f"`{bag['path']}` ({bag['format']}): "
                  + ", ".join(f"`{t}` ({n})" for t, n in bag["topics"].items()), "",
                  f"Play it into RViz with `ros2 bag play {bag['path']}` (or `python -m madm_ros.bag_play {bag['path']}`).",
                  ""]
    return "\n".join(lines)
