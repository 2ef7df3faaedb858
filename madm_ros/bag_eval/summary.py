"""The numbers of a run: scores against the matched labels, frame and drop counts, timings, warnings.

``report.json`` is built from :func:`summarize`; its ``warnings`` list every problem kind the
run's one :class:`~madm_ros.problems.ProblemCounter` counted as ``{kind, count, message}`` (the
message is the first occurrence's explanation).
"""

from __future__ import annotations

import bisect
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from madm_ros.bag_eval.labels import Labels
from madm_ros.bag_eval.state import RunState
from madm_ros.errors import InputError

__all__ = ["score", "simulate_realtime_drops", "summarize"]


def simulate_realtime_drops(arrivals: Sequence[tuple[float, float]]) -> int:
    """Frames a node with one inference thread and a one-frame slot would drop at the recorded rate.

    ``arrivals`` are ``(time s, processing s)`` in arrival order; a frame that is still waiting
    when the next one arrives is replaced (:class:`~madm_ros.nodes.worker.LatestSlot`).
    """
    free_at, pending, dropped = float("-inf"), None, 0
    for t, cost in arrivals:
        if pending is not None and free_at <= t:
            free_at, pending = max(free_at, pending[0]) + pending[1], None
        if pending is not None:
            dropped += 1
            pending = (t, cost)
        elif free_at <= t:
            free_at = t + cost
        else:
            pending = (t, cost)
    return dropped


def score(run: RunState, labels: Labels, segmenter: Any, label_set: str | None,
          sample: set[int]) -> tuple[Any, dict[int, np.ndarray]]:
    """The confusion matrix over every matched label, and the labels of the sampled frames (frame index → ids).

    Label ids are mapped from ``label_set`` to the model's when given; masks are resized (nearest)
    to the label's size when they differ.
    """
    from madm_ros.metrics import ConfusionMatrix
    from madm_ros.palettes import label_mapping, remap_labels
    from madm_ros.segmenter import resize_labels

    assert run.matcher is not None
    lut = label_mapping(label_set, segmenter.label_set.name) if label_set else None
    matrix = ConfusionMatrix(segmenter.label_set.num_classes)
    truths: dict[int, np.ndarray] = {}
    for index, match in sorted(run.matcher.matches().items(), key=lambda item: labels.stamps[item[0]]):
        stamp = labels.stamps[index]
        frame, packed, shape = run.predictions[index]
        assert frame == match.frame
        try:
            label = labels.load(stamp)
        except InputError as error:
            run.problems.report("bad_label", f"label {stamp} skipped: {error}")
            continue
        if lut is not None:
            label = remap_labels(label, lut)
        prediction = np.frombuffer(zlib.decompress(packed), np.uint8).reshape(shape)
        if prediction.shape != label.shape:
            run.problems.report("label_size", f"labels are {label.shape[1]}x{label.shape[0]} but masks {prediction.shape[1]}x"
                                f"{prediction.shape[0]}; masks are resized (nearest) to the label size for scoring")
            prediction = resize_labels(prediction, label.shape)
        try:
            matrix.update(prediction, label)
        except InputError as error:
            run.problems.report("bad_label", f"label {stamp} skipped: {error}")
            continue
        run.scored_labels += 1
        if match.frame in sample:
            truths[match.frame] = label
    return matrix, truths


def _label_counts(run: RunState, labels: Labels, tolerance_ns: int) -> dict[str, Any]:
    """Labels scored, without frame, not reached (a run stopped early), and those that lost their frame to a nearer one."""
    assert run.matcher is not None
    nearest, matched = run.matcher.nearest, run.matcher.matches()
    last = max(run.frame_stamps, default=None)
    early = bool(run.stopped_early) or run.max_frames_reached
    unmatched = [s for i, s in enumerate(labels.stamps) if i not in nearest
                 and not (early and (last is None or s > last + tolerance_ns))]
    without = [i for i in nearest if i not in matched]
    if unmatched:
        stamps = sorted(run.frame_stamps)
        i = bisect.bisect_left(stamps, unmatched[0])
        near = [abs(stamps[j] - unmatched[0]) for j in (i - 1, i) if 0 <= j < len(stamps)]
        gap = f"{min(near) / 1e6:.1f} ms" if near else "none"
        run.problems.report("labels_without_frame", (
            f"{len(unmatched)} of {len(labels.stamps)} labels have no frame within ±{tolerance_ns / 1e6:g} ms "
            f"(first at {unmatched[0]} ns, nearest frame {gap} away); raise --tolerance-ms or check that labels and "
            "frames share a clock" + ("; an event stream's last window closes only when a later event arrives, as in "
                                      "the node" if run.kind == "events" else "")), count=len(unmatched))
    if without:
        run.problems.report("labels_sharing_frame", (
            f"{len(without)} labels chose a frame that a nearer label kept (each frame is scored against one label); "
            "labels closer together than the frames cannot all be scored"), count=len(without))
    return {"labels": len(labels.stamps), "labels_unmatched": len(unmatched), "labels_sharing_frame": len(without),
            "labels_not_reached": len(labels.stamps) - len(nearest) - len(unmatched),
            "frames_scored": len(matched), "unmatched_label_stamps": unmatched[:20]}


def summarize(run: RunState, labels: Labels | None, matrix: Any, segmenter: Any, tolerance_ns: int) -> dict[str, Any]:
    """The report's numbers (see the package docstring for the fields)."""
    from madm_ros.metrics import latency_summary

    latency = latency_summary(run.latencies_ms)
    summary: dict[str, Any] = {
        "miou": None, "per_class_iou": {}, "pixel_accuracy": None, "confusion_matrix": [], "class_names": [],
        "frames": run.frames, "dropped": run.dropped, "invalid_frames": run.invalid_frames, "messages": run.messages,
        "dropped_realtime_estimate": simulate_realtime_drops(run.arrivals),
        "latency_ms_p50": latency["p50"], "latency_ms_p99": latency["p99"], "latency_ms": latency,
        "inference_ms_p50": latency_summary(run.inference_ms)["p50"],
        "partial": bool(run.stopped_early), "stopped_early": run.stopped_early or None,
        "max_frames_reached": run.max_frames_reached,
        "labels": 0, "labels_scored": 0, "labels_unmatched": 0, "frames_scored": 0,
    }
    if labels is not None and run.matcher is not None:
        summary.update(_label_counts(run, labels, tolerance_ns))
    if matrix is not None:
        names = list(segmenter.label_set.class_names)
        summary.update(matrix.as_dict(names), class_names=names, labels_scored=run.scored_labels)
    summary["warnings"] = [{"kind": kind, "count": int(count), "message": run.problems.first_text.get(kind, "")}
                           for kind, count in sorted(run.problems.counts.items())]
    return summary
