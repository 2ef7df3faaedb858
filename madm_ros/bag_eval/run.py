"""The run: setup, then every message of the input topic through the node's frame source and segmenter.

Frames come from :func:`madm_ros.frame_source.frame_source`, the very code the nodes run (image
conversion and size checks for images; decoding, accumulation, restarts and gap handling for
events), and every problem of the run — the stream's, the label reader's, this module's — is
counted by one :class:`~madm_ros.problems.ProblemCounter`. Each frame is segmented (nothing is
dropped for lack of time), written to the output bag, offered to the label matcher
(:class:`~madm_ros.label_matching.NearestFrames`) and, for an evenly spaced sample, kept as an
overlay. ``--max-frames`` stops after exactly that many frames, even in the middle of a message
that completed several.

Only a run that succeeds replaces bag_eval's earlier outputs in ``--out``
(:meth:`~madm_ros.bag_eval.outputs.OutputFolder.commit`). A topic of which no frame reached the
network (every message undecodable or unconvertible, every frame without a valid pixel, or no
message at all) is a :class:`NoUsableFrameError` that names the problems counted and writes
nothing; an output that cannot be written removes the run's partial output. Every other end keeps
what the run evaluated beside the earlier outputs, never over them
(:meth:`~madm_ros.bag_eval.outputs.OutputFolder.set_aside`): Ctrl-C in ``OUT/interrupted/``; an
error part way, a bag that broke off, labels of which none could be scored and an unexpected error
(with its ``traceback.txt``) in ``OUT/failed/``; nothing if no frame was evaluated yet.
"""

from __future__ import annotations

import contextlib
import sqlite3
import sys
import time
import traceback
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from madm_ros.bag_eval.inputs import Setup, model_caveat, setup
from madm_ros.bag_eval.labels import Labels
from madm_ros.bag_eval.options import EvalOptions
from madm_ros.bag_eval.outputs import FAILED, INTERRUPTED, OutputFolder, OutputWriteError
from madm_ros.bag_eval.report import write_report
from madm_ros.bag_eval.state import OverlaySample, RunState
from madm_ros.bag_eval.summary import score, summarize
from madm_ros.errors import InputError, MadmError
from madm_ros.frame_source import Frame, frame_source
from madm_ros.label_matching import NearestFrames, default_tolerance_ns
from madm_ros.problems import ProblemCounter

__all__ = ["NoUsableFrameError", "evaluate_bag"]


class NoUsableFrameError(InputError):
    """No frame of the input topic reached the network; nothing is written and ``--out`` stays as it was."""


class _Pipeline:
    """One input topic through the node's steps, with the output bag, label matching, sample and timing around them."""

    def __init__(self, setup: Setup, output: Any, prefix: str, run: RunState) -> None:
        self.setup, self.output, self.prefix, self.run = setup, output, prefix, run
        self.source = frame_source(setup.kind, setup.params, run.problems)
        self.color = setup.params.color_segmentation_mask_encoding
        self._t0_log: int | None = None

    def push(self, message: Any, log_ns: int, limit: int | None) -> None:
        """One deserialized input message; at most ``limit`` more frames are segmented (``None``: all)."""
        started = time.perf_counter()
        if self._t0_log is None:
            self._t0_log = log_ns
        frames = self.source.push(message)
        if self.setup.kind == "image" and not frames:
            self.run.dropped += 1  # unconvertible image, counted by the frame source
        before_ms = (time.perf_counter() - started) * 1e3
        for frame in frames:
            if limit is not None and self.run.frames >= limit:
                self.run.max_frames_reached = True
                return
            self._frame(frame, before_ms, log_ns)

    def _frame(self, frame: Frame, before_ms: float, log_ns: int) -> None:
        run, params = self.run, self.setup.params
        index = run.frames
        keep_overlay = run.overlays.wants(index)
        start = time.perf_counter()
        try:  # the node's per-frame step, with the node's parameters
            outputs = self.setup.segmenter.segment_frame(frame.array, frame.encoding, params,
                                                         colored=self.output is not None,
                                                         overlay=self.output is not None or keep_overlay)
        except MadmError as error:
            run.problems.report(f"bad_input:{type(error).__name__}", f"frame at {frame.stamp_ns} ns skipped: {error}")
            run.dropped += 1
            return
        cost = time.perf_counter() - start
        segmentation, colored, overlay = outputs.segmentation, outputs.colored, outputs.overlay
        run.frames += 1
        run.latencies_ms.append(before_ms + cost * 1e3)
        if segmentation.valid:
            run.inference_ms.append(segmentation.timings_ms["inference"])
        else:
            run.invalid_frames += 1
            run.problems.report("invalid_frame", f"frame at {frame.stamp_ns} ns: {segmentation.invalid_reason}; its mask "
                                "is all unlabelled (the network was not run)")
        assert self._t0_log is not None
        run.arrivals.append(((log_ns - self._t0_log) / 1e9, cost))
        run.frame_stamps.append(frame.stamp_ns)
        labels = segmentation.labels
        if self.output is not None:
            self._write(frame, labels, colored, overlay)
        if keep_overlay:
            run.overlays.add(index, frame.stamp_ns, overlay[:, :, ::-1] if self.color == "bgr8" else overlay)
        if run.matcher is not None:
            packed = None
            for label in run.matcher.offer(index, frame.stamp_ns):
                packed = packed or zlib.compress(labels.tobytes(), 1)
                run.predictions[label] = (index, packed, labels.shape)

    def _write(self, frame: Frame, labels: np.ndarray, colored: Any, overlay: Any) -> None:
        stamp, frame_id, topic = frame.stamp_ns, frame.frame_id, self.prefix
        try:
            self.output.write_image(f"{topic}/raw_segmentation_mask", labels, "mono8", stamp, frame_id)
            self.output.write_image(f"{topic}/colored_segmentation_mask", colored, self.color, stamp, frame_id)
            self.output.write_image(f"{topic}/segmentation_overlay", overlay, self.color, stamp, frame_id)
            if self.setup.kind == "events":
                self.output.write_image(f"{topic}/edge_frame", frame.array, "mono8", stamp, frame_id)
        except (OSError, sqlite3.Error) as error:
            raise OutputWriteError(f"cannot write the output bag: {error}; free space or choose a writable --out") from None


def _loop(source: Any, topic: str, pipeline: _Pipeline, options: EvalOptions, run: RunState) -> None:
    from tqdm import tqdm

    msgtype = source.topics[topic]
    with tqdm(total=source.counts.get(topic) or None, unit="msg", desc=topic, disable=not options.progress,
              file=sys.stderr, leave=False) as bar:
        for _, _, log_ns, raw in source.messages({topic}):
            bar.update(1)
            run.messages += 1
            try:
                message = source.deserialize(raw, msgtype)
            except Exception as error:  # a malformed record: skipped and counted, like a bad packet in the node
                run.problems.report("undecodable_message", f"message at {log_ns} ns on {topic} could not be deserialized: "
                                    f"{error}")
                continue
            pipeline.push(message, log_ns, options.max_frames)
            if run.max_frames_reached or (options.max_frames is not None and run.frames >= options.max_frames):
                run.max_frames_reached = True
                break


def _no_usable_frame(bag: Any, topic: str, modality: str, options: EvalOptions, run: RunState) -> NoUsableFrameError:
    """The error for a run of which no frame reached the network: what was read, every problem counted, what to do.

    Why an error: a report of zero usable frames has no number worth keeping (a NaN latency, no
    score), and exit code 0 would tell a script that the bag was evaluated.
    """
    read = f"{run.messages} message{'s' if run.messages != 1 else ''} read, {run.frames} frame{'s' if run.frames != 1 else ''}"
    if run.invalid_frames:
        read += f" of which {run.invalid_frames} without a valid pixel"
    if run.stopped_early:
        read += f"; {run.stopped_early}"
    if run.max_frames_reached:
        read += f"; stopped at --max-frames {options.max_frames}"
    problems = "; ".join(f"{count}× {kind}: {run.problems.first_text.get(kind, kind)}"
                         for kind, count in sorted(run.problems.counts.items(), key=lambda item: (-item[1], item[0])))
    if not run.messages:
        problems = "the topic has no message"
    elif not problems:
        problems = "no message completed a frame" + ("; an event frame closes only when a later event arrives, so the "
                                                     "topic must span more than one accumulation window" if run.kind
                                                     == "events" else "")
    camera = "event" if modality == "events" else modality
    return NoUsableFrameError(f"no usable frame in {bag} on {topic} ({read}): {problems}. Check that {topic} is the "
                              f"{camera} camera's input and that its encoding, size and the --config parameters are "
                              f"right; nothing was written, --out {options.out} is as it was")


def _no_score_reason(labels: Labels, run: RunState) -> str:
    if not labels.stamps:
        notes = [run.problems.first_text[k] for k in ("label_file_name", "bad_label_message") if k in run.problems.counts]
        return "no labels were read" + (f" ({'; '.join(notes)})" if notes else "")
    if not run.predictions:
        return run.problems.first_text.get("labels_without_frame", "no frame was produced")
    return "every matched label was unusable (see the warnings)"


@dataclass(frozen=True)
class _Plan:
    """What the run needs beyond the options, settled before the first frame."""

    setup: Setup
    labels: Labels | None
    tolerance_ns: int
    prefix: str


def _plan(options: EvalOptions, source: Any, run: RunState, report: dict[str, Any]) -> _Plan:
    """Topic, parameters, model, labels, tolerance and output names; every error here comes before any write."""
    chosen = setup(options, source)
    segmenter, params, kind = chosen.segmenter, chosen.params, chosen.kind
    if options.label_set:  # a label set the model's cannot be mapped from is refused before the run
        from madm_ros.palettes import label_mapping

        label_mapping(options.label_set, segmenter.label_set.name)
    labels = None
    if options.label_topic:
        labels = Labels.from_topic(source, options.label_topic, run.problems)
    elif options.label_dir:
        labels = Labels.from_dir(Path(options.label_dir), run.problems)
    window_ns = round(params.accumulation_time_ms * 1e6) if kind == "events" and params.slice_method == "time" else None
    tolerance_ns = round(options.tolerance_ms * 1e6) if options.tolerance_ms is not None \
        else default_tolerance_ns(kind, window_ns)
    if labels is not None:
        run.matcher = NearestFrames(labels.stamps, tolerance_ns)
    node = "event_segmentation" if kind == "events" else f"{segmenter.modality}_segmentation"
    prefix = (options.output_prefix or f"/{node}").rstrip("/")
    report.update(topic=chosen.topic, msgtype=source.topics[chosen.topic], modality=segmenter.modality,
                  tolerance_ms=tolerance_ns / 1e6, params=params.to_dict(), model=segmenter.backend.describe(),
                  model_caveat=model_caveat(segmenter), modality_note=chosen.modality_note,
                  label_set=segmenter.label_set.name, output_prefix=prefix)
    segmenter.warm_up()  # as the node does on activate: the first frame must not pay for buffer allocation
    run.kind = kind
    return _Plan(chosen, labels, tolerance_ns, prefix)


@dataclass(frozen=True)
class _Stop:
    """How a run that did not finish ended: where its output is set aside, its exit code, and why."""

    entry: str  # INTERRUPTED or FAILED
    exit_code: int
    cause: str  # what stopped the run, e.g. "interrupted (Ctrl-C)"
    detail: str = ""  # the error's own message
    traceback: str | None = None  # of an unexpected error (a bug), kept as traceback.txt

    def text(self, when: str) -> str:
        """``cause when: detail``, e.g. "stopped by an error after 3 frames: ..."."""
        return f"{self.cause} {when}" + (f": {self.detail}" if self.detail else "")


def _stop_of(error: BaseException) -> _Stop:
    """The :class:`_Stop` of an exception that ended the message loop (call inside the ``except`` block)."""
    if isinstance(error, KeyboardInterrupt):
        return _Stop(INTERRUPTED, 130, "interrupted (Ctrl-C)")
    if isinstance(error, MadmError):
        return _Stop(FAILED, 2, "stopped by an error", str(error))
    return _Stop(FAILED, 1, "stopped by an unexpected error", f"{type(error).__name__}: {error}", traceback.format_exc())


def _commit_output(output: Any) -> None:
    try:
        output.commit()
    except (OSError, sqlite3.Error) as error:
        raise OutputWriteError(f"cannot write the output bag: {error}; free space or choose a writable --out") from None


def evaluate_bag(options: EvalOptions) -> dict[str, Any]:
    """Run the evaluation and write the report, plots, overlays and output bag; returns the report (``exit_code`` inside).

    Only a run that succeeds (``exit_code`` 0) replaces bag_eval's earlier outputs in ``--out``.
    Every other run that evaluated frames leaves them byte for byte and sets its own report and
    output aside (``report["kept_in"]``): in ``OUT/interrupted/`` after Ctrl-C (``exit_code``
    130), in ``OUT/failed/`` after an error part way (2), a bag that broke off (2), labels of
    which none could be scored (2) or an unexpected error (1, with ``traceback.txt``). A run
    stopped before its first frame keeps nothing (``kept_in`` ``None``). ``report["error"]`` says
    what stopped the run.

    Raises:
        MadmError: bad options, a non-empty ``--out`` without ``overwrite``, an unreadable bag, a
            missing topic or model (nothing was written); no frame that reached the network
            (:class:`NoUsableFrameError`: nothing was written); an output that cannot be written
            (:class:`OutputWriteError`: this run's partial output is removed). ``--out`` stays as
            it was in each case.
    """
    from madm_ros.bag_source import BagSource, OutputBag

    folder = OutputFolder(Path(options.out), options.overwrite)
    run = RunState(ProblemCounter(), overlays=OverlaySample(options.overlays))
    report: dict[str, Any] = {"bag": str(options.bag), "error": None, "processing_covers": (
        "class ids only, and the overlays of the sampled frames (no output bag)" if options.output_bag_format == "none"
        else "class ids, colour mask and overlay of every frame (for the output bag)")}
    with BagSource(options.bag) as source:
        report.update(storage=source.storage, read_note=source.note or None)
        plan = _plan(options, source, run, report)
        segmenter, labels = plan.setup.segmenter, plan.labels
        staging = folder.start()  # from here on the run writes (into staging; moved into place at the end)
        output: Any = None
        matrix, truths, stop = None, {}, None
        try:
            if options.output_bag_format != "none":
                try:
                    output = OutputBag(staging / "output_bag", options.output_bag_format)
                except OSError as error:
                    raise OutputWriteError(f"cannot write the output bag in {folder.path}: {error}") from None
            pipeline = _Pipeline(plan.setup, output, plan.prefix, run)
            _loop(source, plan.setup.topic, pipeline, options, run)
            if source.problem:
                run.stopped_early = source.problem
            if run.frames == run.invalid_frames:  # not one frame reached the network
                raise _no_usable_frame(options.bag, plan.setup.topic, segmenter.modality, options, run)
            if output is not None:
                _commit_output(output)
                report["output_bag"] = {"format": options.output_bag_format, "topics": dict(output.counts)}
                output = None
            report["stream"] = pipeline.source.counters()
            if labels is not None:
                sample = {index for index, _, _ in run.overlays.chosen()}
                matrix, truths = score(run, labels, segmenter, options.label_set, sample)
            report.update(summarize(run, labels, matrix, segmenter, plan.tolerance_ns))
            if labels is not None and not report["labels_scored"]:
                report["error"] = f"no label could be scored: {_no_score_reason(labels, run)}"
        except (OutputWriteError, NoUsableFrameError):  # --out stays as it was
            _abort(output)
            folder.discard()
            raise
        except (KeyboardInterrupt, Exception) as error:  # set aside what was evaluated; the earlier report stays
            stop = _stop_of(error)
        except BaseException:
            _abort(output)
            folder.discard()
            raise
    if stop is not None:
        return _stopped(stop, folder, staging, report, run, output, options.output_bag_format)
    report["exit_code"] = 2 if report.get("error") or run.stopped_early else 0
    if report["exit_code"] == 0:
        _set_output_bag_path(report, folder.path)
        _write(folder, staging, report, run, matrix, segmenter, truths)
        folder.commit()
    else:  # a bag that broke off, or labels of which none could be scored: a result, but not one to replace a good one
        _keep(FAILED, folder, staging, report, run, matrix, segmenter, truths)
    return report


def _abort(output: Any) -> None:
    if output is not None:
        output.abort()


def _set_output_bag_path(report: dict[str, Any], where: Path) -> None:
    if "output_bag" in report:
        report["output_bag"]["path"] = str(where / "output_bag")


def _keep(entry: str, folder: OutputFolder, staging: Path, report: dict[str, Any], run: RunState, matrix: Any,
          segmenter: Any, truths: dict[int, np.ndarray]) -> None:
    """Write the report into the staging folder and set it aside as ``OUT/<entry>``; the earlier outputs stay."""
    kept = folder.path / entry
    report["kept_in"] = str(kept)
    _set_output_bag_path(report, kept)
    _write(folder, staging, report, run, matrix, segmenter, truths)
    folder.set_aside(entry)


def _stopped(stop: _Stop, folder: OutputFolder, staging: Path, report: dict[str, Any], run: RunState, output: Any,
             output_format: str) -> dict[str, Any]:
    """The report of a run that did not finish: its frames set aside with their report, or nothing kept without any."""
    run.stopped_early = run.stopped_early or (f"{stop.cause}: {stop.detail}" if stop.detail else stop.cause)
    report.update(summarize(run, None, None, None, 0), exit_code=stop.exit_code, kept_in=None)
    if not run.frames:
        _abort(output)
        folder.discard()
        bug = " (a bug; please report it)" if stop.traceback is not None else ""
        report["error"] = f"{stop.text('before the first frame')}{bug}; nothing was kept, --out {folder.path} is as it was"
        return report
    if output is not None:  # the frames written so far stay readable
        try:
            _commit_output(output)
        except OutputWriteError:
            _abort(output)
            folder.discard()
            raise
        report["output_bag"] = {"format": output_format, "topics": dict(output.counts)}
    report["error"] = stop.text(f"after {run.frames} frame{'s' if run.frames != 1 else ''}")
    if stop.traceback is not None:
        with contextlib.suppress(OSError):  # a report without it is still worth keeping
            (staging / "traceback.txt").write_text(stop.traceback)
            report["error"] += f" (a bug; please report it with {folder.path / stop.entry / 'traceback.txt'})"
    _keep(stop.entry, folder, staging, report, run, None, None, {})
    return report


def _write(folder: OutputFolder, staging: Path, report: dict[str, Any], run: RunState, matrix: Any, segmenter: Any,
           truths: dict[int, np.ndarray]) -> None:
    """Write the report into the staging folder; a failed write removes the run's output."""
    try:
        write_report(staging, report, run, matrix, segmenter, truths)
    except OSError as error:
        folder.discard()
        raise OutputWriteError(f"cannot write the report in {folder.path}: {error.strerror or error}; free space or "
                               "choose a writable --out") from None
    except BaseException:
        folder.discard()
        raise
