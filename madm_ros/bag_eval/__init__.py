"""``python -m madm_ros.bag_eval BAG``: the node's pipeline over a recorded bag, scored against labels, no ROS needed.

Why offline: accuracy must be measured on exactly what the robot computes, reproducibly and
without real-time drops; and a bag with the masks written back lets anyone look at them in RViz
(``ros2 bag play OUT/output_bag``). So this runs the very code the nodes run, frame by frame and in
order: :func:`madm_ros.frame_source.frame_source` (image conversion for depth and thermal
``sensor_msgs/Image`` topics; decoding, accumulation, restarts and gaps for event topics) and
:meth:`Segmenter.segment`, configured by the node's own parameter file (``--config
config/events.yaml``; unknown keys are errors, as in the node). Every frame is segmented: nothing
is dropped for lack of time, so two runs give identical masks, and those equal the masks the live
node publishes for the frames it does not drop. Frames without any valid pixel get an
all-unlabelled mask without inference, as in the node, and are counted (``invalid_frames``).

Labels: a label image topic (``--label-topic``: ``sensor_msgs/Image`` mono8 class ids, 255 =
ignore, stamped like the frames) or a folder of PNGs (``--label-dir``: single-channel uint8 class
ids named by their stamp, ``<stamp_ns>.png`` or ``<sec>_<nanosec>.png``), paired with frames by
:mod:`madm_ros.label_matching`: each label to the frame whose stamp is nearest, within
``--tolerance-ms`` (default 1 ms for images, half the accumulation window for time-sliced events,
25 ms for count-sliced ones); a frame chosen by several labels keeps the nearest.

Outputs in ``--out``: ``report.json`` (``miou``, ``per_class_iou``, ``frames``, ``dropped``,
``invalid_frames``, ``latency_ms_p50``, ``latency_ms_p99``, ``warnings`` and more; ``model_caveat``
when the model is a built-in synthetic-only default, ``modality_note`` when the modality was
guessed from a 16-bit encoding), ``report.md``, ``iou.png``,
``confusion.png``, ``latency.png``, ``overlays/<stamp_ns>.png`` for ``--overlays`` evenly spaced
frames with their contact sheet ``overlays.png``, and ``output_bag/`` (raw masks, colour masks,
overlays and, for events, edge frames, stamped and logged at the input stamps).

The output folder is never mixed or half-written (:mod:`madm_ros.bag_eval.outputs`): a non-empty
``--out`` is refused unless ``--overwrite``, which replaces only what bag_eval wrote there (listed
in ``OUT/.bag_eval.json``; other files stay). The run writes into a staging folder and only a run
that succeeds (exit code 0) swaps its files in, so a failed run never replaces an earlier report:
an error before evaluation starts (a mistyped bag path, a missing topic, a bad model) writes
nothing; so does a topic of which no frame reaches the network (every message undecodable,
unconvertible or without a valid pixel: one line naming the problems counted, exit code 2); a
write that fails (read-only folder, disk full) ends with one line and exit code 2 after removing
that run's partial output. A run that evaluated frames and then ends otherwise keeps them, with
their report and output bag, beside the earlier report and never over it: an error part way, a
bag that broke off or no label that could be scored in ``OUT/failed/`` (exit code 2), an
unexpected error in ``OUT/failed/`` with ``traceback.txt`` (exit code 1), Ctrl-C in
``OUT/interrupted/`` (exit code 130); nothing, if no frame was evaluated yet. Each ends with one
line saying what stopped the run and where its output is. Every other bad input is one line and
exit code 2.

Modules: :mod:`~madm_ros.bag_eval.options` (what to run), :mod:`~madm_ros.bag_eval.inputs` (topic,
parameters, model), :mod:`~madm_ros.bag_eval.labels`, :mod:`~madm_ros.bag_eval.run` (the message
loop), :mod:`~madm_ros.bag_eval.summary` (the numbers), :mod:`~madm_ros.bag_eval.report` (the
files), :mod:`~madm_ros.bag_eval.outputs` (the folder policy), :mod:`~madm_ros.bag_eval.cli`.
"""

from madm_ros.bag_eval.cli import main
from madm_ros.bag_eval.options import EvalOptions
from madm_ros.bag_eval.run import evaluate_bag
from madm_ros.bag_eval.summary import simulate_realtime_drops

__all__ = ["EvalOptions", "evaluate_bag", "main", "simulate_realtime_drops"]
