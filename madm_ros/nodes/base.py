"""What the image and event segmentation nodes share: lifecycle, live parameter changes, input, inference, outputs.

Its parts live beside it: :mod:`~madm_ros.nodes.ros_parameters` (declaring the parameters),
:mod:`~madm_ros.nodes.qos` (presets and mismatch reports), :mod:`~madm_ros.nodes.messages` (what
is published), :mod:`~madm_ros.nodes.diagnostics` (counters and status), :mod:`~madm_ros.nodes.worker`
(the hand-over to the inference thread).

Lifecycle: ``configure`` reads the parameters and loads the model (a missing or corrupt model
fails the transition with a message naming the fix, and the node stays up reporting ERROR in
diagnostics); ``activate`` runs one blank frame so the backend allocates its buffers, starts the
inference thread and subscribes; ``deactivate`` unsubscribes and stops the thread; ``cleanup``
releases the model. With ``autostart`` (the default) the node configures and activates itself.

Outputs are private topics (``~/raw_segmentation_mask``, ``~/colored_segmentation_mask``,
``~/segmentation_overlay``, ``~/camera_info`` scaled to the masks, latched ``~/label_info``), so
the scaled camera info sits beside the masks where RViz's Camera display looks for it and never
collides with the ``camera_info`` input.

Parameters are declared from :func:`madm_ros.node_params.parameter_table` with their
descriptions, ranges and choices. ``ros2 param set`` applies a ``live`` parameter (overlay,
colour encoding, diagnostics period) at once and an ``input`` one (accumulation) by restarting
the frame source. A ``reload`` one (model, backend, mask size, QoS, input kind) makes a configured
node load and warm up the model the new values name before it accepts them: a model that fails
is refused with the reason (``ros2 param set`` prints it) while the old one keeps running;
otherwise the node swaps it in (recreating only topics whose QoS or type changed), so swapping a
model needs no restart and no lifecycle commands. ``autostart`` alone is read-only: only a new process can apply it.

The main input (``image`` or ``events``) follows the outputs: while nobody subscribes to any
output (masks, overlay, edge frame, camera info) the node unsubscribes from it, so nothing is
converted or decoded; it subscribes again within ``FOLLOW_PERIOD_S`` of the first output
subscriber, with a fresh frame source. Diagnostics show ``input_subscribed``. ``camera_info``
stays subscribed (it is small and its latest value must be at hand).

Every problem with the input is counted by kind in diagnostics and logged once per kind; none
stops the node. Inputs become frames through :mod:`madm_ros.frame_source`, the path ``bag_eval``
and ``adapt --target-bag`` share; :attr:`SegmentationNode.timing` is the public hook through which
``bench/node_latency.py`` times the stages (callback, frame source, hand-over, processing).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter

from madm_ros.errors import ConfigError, MadmError
from madm_ros.frame_source import ImageFrames, frame_source
from madm_ros.node_params import PARAMETER_RULES, SegmentationParams, params_from_values
from madm_ros.nodes.diagnostics import FrameStats, diagnostic_status
from madm_ros.nodes.messages import (
    array_to_image_msg,
    frame_header,
    image_msg_to_array,
    label_info_message,
    scaled_camera_info,
)
from madm_ros.nodes.qos import LATCHED, input_qos_events, output_qos_events, qos_profile
from madm_ros.nodes.ros_parameters import declare_parameters, parameter_values, unknown_overrides
from madm_ros.nodes.worker import LatestSlot
from madm_ros.problems import ProblemCounter
from madm_ros.ros_messages import message_class_of, stamp_to_ns
from madm_ros.segmenter import Segmenter, load_segmenter

if TYPE_CHECKING:
    from madm_ros.events.stream import EventFrameStream

__all__ = ["FrameJob", "SegmentationNode"]

OUTPUT_TOPICS = ("raw_segmentation_mask", "colored_segmentation_mask", "segmentation_overlay")
CAMERA_INFO_DEPTH = 5
"""History depth of the ``camera_info`` subscription: only the newest is used."""

FOLLOW_PERIOD_S = 0.2
"""How often a node checks whether its outputs have subscribers (and so whether to take its input)."""


@dataclass
class FrameJob:
    """A frame handed from a callback to the inference thread."""

    array: np.ndarray
    encoding: str
    header: Any  # std_msgs/Header copied to every output
    received: float  # time.perf_counter() when the input arrived
    camera_info: Any  # the newest camera_info when the input arrived (None: none yet)


class SegmentationNode(LifecycleNode):
    """Base of the segmentation nodes; subclasses name their input, modality and parameter class."""

    PARAMS: type[SegmentationParams] = SegmentationParams
    MODALITY: str | None = None  # the modality the node serves (``None``: taken from a parameter)
    INPUT: str = "image"  # the main input: its topic name and its frame-source kind (``image`` or ``events``)
    INPUT_FRAME_TOPIC: str | None = None  # ``~/<topic>`` republishing each frame of the source as it is, if any
    # (events: the mono8 edge frame, exactly the network's input)

    def __init__(self, node_name: str, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self.params: Any = None
        self.segmenter: Segmenter | None = None
        # Held by the input callback, the follow-outputs timer and whatever stops, starts or reloads them: under a
        # multi-threaded executor a reload must not destroy the publishers or subscriptions a callback is using.
        self._input_lock = threading.RLock()
        self.problems = ProblemCounter(self._log_first_problem)
        self.source: ImageFrames | EventFrameStream | None = None  # set on activate (_subscribe)
        self.timing: Callable[[str, float], None] | None = None
        """Called with (stage, milliseconds) per frame when set (bench/node_latency.py); None costs nothing."""
        self._failure = "not configured yet"
        self._slot = LatestSlot()
        self._worker: threading.Thread | None = None
        self._outputs: dict[str, Any] = {}
        self._inputs: list[Any] = []
        self._main_input: Any = None  # the image/events subscription while any output has a subscriber
        self._follow_timer: Any = None
        self._input_group = MutuallyExclusiveCallbackGroup()
        self.stats = FrameStats()
        self._last_camera_info: Any = None
        # (the checked parameters as (name, value) pairs, their params, their loaded model): from the set-parameters
        # callback to the post-set callback of the same change
        self._reloaded: tuple[list[tuple[str, Any]], Any, Segmenter] | None = None
        self._dropped_earlier = 0  # frames dropped by the inference threads of earlier activations and reloads
        self._parameter_errors = declare_parameters(self, self.PARAMS)  # out of range: configure refuses them
        unknown = unknown_overrides(self)  # a warning, not a refusal: shared /** files hold other nodes' too
        if unknown:
            self.problems.report("unknown_parameters", f"parameters this node does not have, so they have no effect: "
                                 f"{', '.join(unknown)}; `ros2 param list` shows the node's parameters", len(unknown))
        self.add_on_set_parameters_callback(self._check_parameter_change)
        self.add_post_set_parameters_callback(self._apply_parameter_change)
        from diagnostic_msgs.msg import DiagnosticArray

        self._diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diagnostics_timer: Any = None
        self._start_diagnostics_timer(float(self.get_parameter("diagnostics_period_s").value))
        if self.get_parameter("autostart").value and self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
            self.trigger_activate()

    def _start_diagnostics_timer(self, period: float) -> None:
        """(Re)start the diagnostics timer at ``period`` seconds (at start and at every configure)."""
        if self._diagnostics_timer is not None:
            self.destroy_timer(self._diagnostics_timer)
        self._diagnostics_timer = self.create_timer(max(period, 0.05), self._publish_diagnostics,
                                                    callback_group=MutuallyExclusiveCallbackGroup(),
                                                    clock=Clock(clock_type=ClockType.STEADY_TIME))

    @property
    def failure(self) -> str:
        """Why the node is not running (empty while it runs)."""
        return self._failure

    # ------------------------------------------------------------------ parameters
    def _check_parameter_change(self, parameters: list[Parameter]) -> SetParametersResult:
        """Refuse an invalid change with the reason (``ros2 param set`` prints it); load the model a ``reload`` names.

        Why here, before the values are stored: a model that does not load or run must leave the
        node as it was, running the old one.
        """
        # the node declares exactly its class's fields (and ROS's use_sim_time, which has no rule)
        changes = {p.name: p.value for p in parameters if p.name in PARAMETER_RULES}
        try:
            params = params_from_values(self.PARAMS, {**parameter_values(self, self.PARAMS), **changes}, "parameter")
        except MadmError as error:
            return SetParametersResult(successful=False, reason=str(error))
        reloads = sorted(name for name in changes if PARAMETER_RULES[name].apply == "reload")
        if reloads and self.segmenter is not None:
            try:
                segmenter = self.load_model(params)
                segmenter.warm_up()
            except Exception as error:  # MadmError names the fix; anything else is still a model that cannot run
                return SetParametersResult(successful=False, reason=(
                    f"{', '.join(reloads)} not changed: {error}; the node keeps running its current model"))
            self._reloaded = ([(p.name, p.value) for p in parameters], params, segmenter)
        return SetParametersResult(successful=True)

    def _apply_parameter_change(self, parameters: list[Parameter]) -> None:
        """Use accepted values: a checked model through :meth:`_reload`, ``input`` ones through a new frame source."""
        changed = {p.name for p in parameters if p.name in PARAMETER_RULES}
        reloaded, self._reloaded = self._reloaded, None
        if "diagnostics_period_s" in changed:
            self._start_diagnostics_timer(float(self.get_parameter("diagnostics_period_s").value))
        if self.segmenter is None:  # not configured: configure reads them
            return
        if reloaded is not None and reloaded[0] == [(p.name, p.value) for p in parameters]:  # checked for this change
            self._reload(reloaded[1], reloaded[2], sorted(changed))
            return
        self.params = self.read_params()
        if self.source is not None and any(PARAMETER_RULES[name].apply == "input" for name in changed):
            self.source = self._make_source()
            self.get_logger().info("input settings changed: the frame source restarted (a partial slice is dropped)")

    def read_params(self) -> Any:
        """The current parameters as the node's dataclass (``ConfigError`` on a bad value)."""
        if self._parameter_errors:
            raise ConfigError(f"parameter out of range: {'; '.join(self._parameter_errors)}")
        return params_from_values(self.PARAMS, parameter_values(self, self.PARAMS), "parameter")

    # ------------------------------------------------------------------ lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Read parameters, load the model, create the publishers."""
        try:
            params = self.read_params()
            segmenter = self.load_model(params)
        except MadmError as error:
            self._failure = str(error)
            self.problems.count("configure_failed")
            self.get_logger().error(f"configure failed: {error}")
            return TransitionCallbackReturn.FAILURE
        except Exception as error:
            self._failure = f"unexpected {type(error).__name__}: {error}"
            self.problems.count("configure_failed")
            self.get_logger().error(f"configure failed: {self._failure}")
            return TransitionCallbackReturn.FAILURE
        self._take(params, segmenter)
        return TransitionCallbackReturn.SUCCESS

    def _take(self, params: Any, segmenter: Segmenter) -> None:
        """Run with ``params`` and a loaded ``segmenter``: publishers (created, or told the new model), diagnostics timer."""
        self.params, self.segmenter = params, segmenter
        if not self._outputs:
            self._create_publishers()
        # latched: late subscribers get the model's labels
        self._outputs["label_info"].publish(label_info_message(segmenter, self.get_clock().now().to_msg()))
        self._start_diagnostics_timer(params.diagnostics_period_s)
        described = segmenter.backend.describe()
        self.get_logger().info(f"model {described.get('path', '?')} on {described.get('backend', '?')}: "
                               f"{segmenter.modality}, {segmenter.label_set.name}, "
                               f"network {segmenter.spec.width}x{segmenter.spec.height}")
        self._failure = ""

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Allocate the backend's buffers, start inference, subscribe."""
        assert self.segmenter is not None
        try:
            self.segmenter.warm_up()
        except MadmError as error:
            self.get_logger().error(f"activate failed: the model does not run ({error})")
            self.problems.count("activate_failed")
            return TransitionCallbackReturn.FAILURE
        self._start()
        return super().on_activate(state)

    def _start(self) -> None:
        """Start the inference thread and subscribe (activate, and a reload of an active node)."""
        self._slot = LatestSlot()
        self._worker = threading.Thread(target=self._inference_loop, name=f"{self.get_name()}-inference", daemon=True)
        self._worker.start()
        self._subscribe()

    def _reload(self, params: Any, segmenter: Segmenter, changed: list[str]) -> None:
        """Swap in a loaded and warmed-up ``segmenter`` with ``params``, recreating only the topics whose QoS or type changed.

        A model swap keeps every publisher and subscription: each frame reads the model and
        parameters once, so a frame in flight finishes with the old ones and the next takes the
        new. Why not recreate them anyway: subscribers would lose their match for a moment, and
        rclpy's executors can fail on an entity destroyed while they build their wait set.
        A new input QoS or message type restarts the input and inference thread, a new output
        QoS the publishers (with the inference thread stopped, so no frame publishes on them).
        """
        old = self.params
        new_outputs = (params.output_qos, params.output_qos_depth) != (old.output_qos, old.output_qos_depth)
        new_input = self._input_settings(params) != self._input_settings(old)
        with self._input_lock:
            restart = self._worker is not None and (new_input or new_outputs)
            if restart:
                self._stop()
            if new_outputs:
                self._release()
            self._take(params, segmenter)
            if restart:
                self._start()
            elif self.source is not None and params.limits != old.limits:
                self.source = self._make_source()
        self.get_logger().info(f"{', '.join(changed)} changed: model reloaded"
                               + (", input restarted" if restart else "") + (", outputs recreated" if new_outputs else ""))

    @staticmethod
    def _input_settings(params: Any) -> tuple[Any, ...]:
        """What the input subscription is made from: a change means a new subscription."""
        return params.input_qos, params.input_qos_depth, getattr(params, "message_type", None)

    def _main_subscription(self) -> Any:
        """Create the subscription to the main input (topic :attr:`INPUT`, of the type :meth:`_input_type` names)."""
        qos = qos_profile(self.params.input_qos, self.params.input_qos_depth)
        return self.create_subscription(
            message_class_of(self._input_type()[0]), self.INPUT, self._on_input, qos, callback_group=self._input_group,
            event_callbacks=input_qos_events(self.report_problem, lambda: self.params.input_qos, self._input_topic))

    def _input_topic(self) -> str:
        return self._main_input.topic_name if self._main_input is not None else "the input topic"

    def _follow_outputs(self) -> None:
        """Subscribe to the main input while any output has a subscriber; unsubscribe otherwise (module docstring)."""
        with self._input_lock:
            if self._follow_timer is not None:  # None: the input was stopped while this call waited
                self._follow_outputs_now()

    def _follow_outputs_now(self) -> None:
        listened = any(publisher.get_subscription_count() > 0 for name, publisher in self._outputs.items()
                       if name != "label_info")
        if listened and self._main_input is None:
            try:
                self._main_input = self._main_subscription()
            except Exception as error:  # rclpy's RCLError: e.g. this process already has the topic with another type
                self.report_problem("input_subscription_failed", f"could not subscribe to the input: {error}; "
                                    f"retrying every {FOLLOW_PERIOD_S} s (check the topic's message type)")
                return
            self._inputs.append(self._main_input)
        elif not listened and self._main_input is not None:
            self._inputs.remove(self._main_input)
            self.destroy_subscription(self._main_input)
            self._main_input = None
            self.source = self._make_source()  # the next subscriber gets a fresh stream, not a stale slice
            self.get_logger().info("no subscriber on any output: unsubscribed from the input until one subscribes")

    def _subscribe(self) -> None:
        """A fresh frame source, ``camera_info``, and the main input following the outputs now and every ``FOLLOW_PERIOD_S``.

        On the steady clock: under ``use_sim_time`` a ROS-clock timer would wait for ``/clock``, and a
        bag played with ``--clock`` starts only once someone listens.
        """
        from sensor_msgs.msg import CameraInfo

        self.source = self._make_source()
        self._inputs = [self.create_subscription(CameraInfo, "camera_info", self._on_camera_info,
                                                 qos_profile(self.params.input_qos, CAMERA_INFO_DEPTH),
                                                 callback_group=self._input_group)]
        self._follow_timer = self.create_timer(FOLLOW_PERIOD_S, self._follow_outputs, callback_group=self._input_group,
                                               clock=Clock(clock_type=ClockType.STEADY_TIME))  # also under use_sim_time
        self._follow_outputs()

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Unsubscribe and stop the inference thread (a frame in flight is finished first)."""
        self._stop()
        return super().on_deactivate(state)

    def _stop(self) -> None:
        """Stop following the outputs, unsubscribe, and finish and stop the inference thread."""
        with self._input_lock:
            if self._follow_timer is not None:
                self.destroy_timer(self._follow_timer)
                self._follow_timer = None
            for subscription in self._inputs:
                self.destroy_subscription(subscription)
            self._inputs = []
            self._main_input = None
            self._slot.close()
            if self._worker is not None:
                self._worker.join(timeout=10)
                self._worker = None
                self._dropped_earlier += self._slot.dropped

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Release the model and the publishers."""
        self._release()
        self._failure = "not configured (cleaned up)"
        return TransitionCallbackReturn.SUCCESS

    def _release(self) -> None:
        with self._input_lock:
            outputs, self._outputs = self._outputs, {}
            for publisher in outputs.values():
                self.destroy_publisher(publisher)
            self.segmenter = None

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop everything whatever the state."""
        if self._worker is not None:
            self.on_deactivate(state)
        return self.on_cleanup(state)

    def destroy_node(self) -> None:
        """Stop the inference thread before the node's handles go away."""
        self._slot.close()
        if self._worker is not None:
            self._worker.join(timeout=10)
        super().destroy_node()

    # ------------------------------------------------------------------ subclass hooks
    @classmethod
    def _modality(cls, params: Any) -> str:
        """The modality the model of ``params`` must have."""
        assert cls.MODALITY is not None
        return cls.MODALITY

    def _make_source(self) -> ImageFrames | EventFrameStream:
        """The frame source of the current parameters (a new one after an ``input`` parameter change)."""
        return frame_source(self.INPUT, self.params, self.problems, convert=image_msg_to_array)

    def _on_camera_info(self, message: Any) -> None:
        """Keep the latest ``camera_info``: a frame takes the one current when it arrives; its masks go out with it, scaled."""
        self._last_camera_info = message

    @classmethod
    def load_model(cls, params: Any, **options: Any) -> Segmenter:
        """The model ``params`` name, checked as configure checks it (``MadmError`` naming the fix).

        A class method so that ``python -m madm_ros.launch`` rehearses configure with the very same
        checks before any node exists; subclasses add their own. ``options`` go to the backend.
        """
        return load_segmenter(params, cls._modality(params), **options)

    # ------------------------------------------------------------------ publishing
    def _create_publishers(self) -> None:
        """Create the outputs into a new dict, set at the end: a timer reading the old one never sees it half-built."""
        from sensor_msgs.msg import CameraInfo, Image

        from madm_ros.msg import SegmentationInfo

        qos = qos_profile(self.params.output_qos, self.params.output_qos_depth)
        images = {topic: Image for topic in (*OUTPUT_TOPICS, *((self.INPUT_FRAME_TOPIC,) if self.INPUT_FRAME_TOPIC else ()))}
        outputs = {topic: self.create_publisher(kind, f"~/{topic}", qos, event_callbacks=output_qos_events(
                       self.report_problem, lambda: self.params.output_qos, topic))
                   for topic, kind in {**images, "camera_info": CameraInfo}.items()}
        outputs["label_info"] = self.create_publisher(SegmentationInfo, "~/label_info", LATCHED)
        self._outputs = outputs

    def _on_input(self, message: Any) -> None:
        """The input subscription's callback: the source's frames, each handed to the inference thread."""
        received = time.perf_counter()
        with self._input_lock:
            if self._worker is None:  # taken before the input stopped: nobody would process its frames
                return
            assert self.source is not None
            frames = self.source.push(message)
            self._time("frame_source", (time.perf_counter() - received) * 1e3)
            for frame in frames:  # older frames completed by the same message replace each other (counted drops)
                header = frame_header(frame)
                if self.INPUT_FRAME_TOPIC and self.wanted(self.INPUT_FRAME_TOPIC):
                    self._outputs[self.INPUT_FRAME_TOPIC].publish(array_to_image_msg(frame.array, frame.encoding, header))
                self.submit(FrameJob(frame.array, frame.encoding, header, received, self._last_camera_info))
        self._time("callback", (time.perf_counter() - received) * 1e3)

    def _time(self, stage: str, milliseconds: float) -> None:
        if self.timing is not None:
            self.timing(stage, milliseconds)

    def wanted(self, topic: str) -> bool:
        """Whether anyone subscribes to an output (outputs nobody reads are not computed)."""
        publisher = self._outputs.get(topic)
        return publisher is not None and publisher.get_subscription_count() > 0

    def submit(self, job: FrameJob) -> None:
        """Hand a frame to the inference thread (never blocks; a frame still waiting is dropped)."""
        self.stats.count_in()
        self._time("stamp_to_handover", (time.time_ns() - stamp_to_ns(job.header.stamp)) / 1e6)
        self._slot.put(job)

    def _inference_loop(self) -> None:
        slot = self._slot
        while True:
            job = slot.take()
            if job is None:
                return
            started = time.perf_counter()
            self._time("handover_wait", (started - job.received) * 1e3)
            try:
                self._process(job)
                self._time("process", (time.perf_counter() - started) * 1e3)
            except MadmError as error:
                self.report_problem(f"bad_input:{type(error).__name__}", f"frame skipped: {error}")
            except Exception as error:
                self.report_problem(f"internal:{type(error).__name__}", f"frame skipped after an unexpected error: {error!r}")

    def _process(self, job: FrameJob) -> None:
        if not any(self.wanted(topic) for topic in (*OUTPUT_TOPICS, "camera_info")):
            self.stats.count_skipped()
            return
        assert self.segmenter is not None
        params = self.params
        outputs = self.segmenter.segment_frame(job.array, job.encoding, params,  # the step bag_eval runs too
                                               colored=self.wanted("colored_segmentation_mask"),
                                               overlay=self.wanted("segmentation_overlay"))
        segmentation = outputs.segmentation
        for stage, milliseconds in segmentation.timings_ms.items():
            self._time(f"segment_{stage}", milliseconds)
        if not segmentation.valid:  # published as all-unlabelled masks, so every input still has its output
            self.report_problem("invalid_frame", f"frame with no valid pixel: {segmentation.invalid_reason}; "
                                "its masks are all 255 (unlabelled)")
        header = job.header
        self._outputs["raw_segmentation_mask"].publish(array_to_image_msg(segmentation.labels, "mono8", header))
        color = params.color_segmentation_mask_encoding
        if outputs.colored is not None:
            self._outputs["colored_segmentation_mask"].publish(array_to_image_msg(outputs.colored, color, header))
        if outputs.overlay is not None:
            self._outputs["segmentation_overlay"].publish(array_to_image_msg(outputs.overlay, color, header))
        if job.camera_info is not None:
            self._outputs["camera_info"].publish(scaled_camera_info(
                job.camera_info, self._camera_window(job.camera_info), segmentation.labels.shape, header))
        done = time.perf_counter()
        latency_ms = (self.get_clock().now().nanoseconds - stamp_to_ns(header.stamp)) / 1e6
        self._time("stamp_to_mask_published", (time.time_ns() - stamp_to_ns(header.stamp)) / 1e6)
        # an invalid frame skipped the network: no inference time to report
        self.stats.count_out(done, (done - job.received) * 1e3,
                             segmentation.timings_ms["inference"] if segmentation.valid else None, latency_ms)

    def _camera_window(self, info: Any) -> tuple[int, int, int, int]:
        """``(x0, y0, width, height)`` of the camera image the masks cover."""
        return 0, 0, int(info.width) or 1, int(info.height) or 1

    # ------------------------------------------------------------------ problems and diagnostics
    def report_problem(self, kind: str, text: str) -> None:
        """Count a problem of ``kind`` and log it the first time that kind occurs."""
        self.problems.report(kind, text)

    def _log_first_problem(self, kind: str, text: str) -> None:
        self.get_logger().warning(f"{text} (further '{kind}' problems are only counted in diagnostics)")

    def counters(self) -> dict[str, Any]:
        """Everything diagnostics report, as a flat dict (also used by the demo's summary)."""
        dropped = self._dropped_earlier + self._slot.dropped  # before frames_in: their sum never passes it early
        stats = self.stats.as_dict()
        values: dict[str, Any] = {
            "frames_in": stats.pop("frames_in"), "frames_out": stats.pop("frames_out"), "total_dropped_frames": dropped,
            "skipped_no_subscribers": stats.pop("skipped_no_subscribers"),
            "input_subscribed": int(self._main_input is not None), **self.problems.as_dict("problem_"), **stats}
        if self.source is not None:
            values.update({f"{self.source.kind}_{k}": v for k, v in self.source.counters().items()})
        return values

    def _input_type(self) -> tuple[str, str]:
        """The ROS type the main input subscribes to, and what to do when its publishers carry another."""
        raise NotImplementedError

    def _check_input_type(self, subscription: Any) -> None:
        """Report publishers on the input topic none of which has the subscribed type (it would look like silence).

        Publishers only: the topic's type list also holds this node's own subscription, which
        always has the wanted type. Counted as ``<input>_type_mismatch`` (``image`` or ``events``).
        """
        assert self.source is not None
        wanted, fix = self._input_type()
        topic = subscription.topic_name
        types = sorted({info.topic_type for info in self.get_publishers_info_by_topic(topic)})
        if types and wanted not in types:
            self.report_problem(f"{self.source.kind}_type_mismatch", f"{topic} carries {', '.join(types)} but this node reads "
                                f"{wanted}; {fix}")

    def _publish_diagnostics(self) -> None:
        from diagnostic_msgs.msg import DiagnosticArray

        subscription, source = self._main_input, self.source  # read once: a reload may replace them meanwhile
        if subscription is not None and source is not None and not source.messages:
            self._check_input_type(subscription)  # until the first message (again after each restart of the source)

        status = diagnostic_status(f"{self.get_fully_qualified_name()}: segmentation", self.get_name(), self._failure,
                                   self.counters())
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diagnostics.publish(array)
