"""The pieces of ``bench/node_latency.py``, one purpose each.

- :mod:`.stats`: percentile summaries and timed loops;
- :mod:`.cpu`: CPU per thread and per process during a run;
- :mod:`.probe` and :mod:`.node_process`: the node process — the node timed through its public
  ``SegmentationNode.timing`` hook — and the stdin/stdout protocol the bench drives it with;
- :mod:`.transport`: the bench's own rclpy node (publisher and mask recorder);
- :mod:`.models` and :mod:`.dds`: which models and which Fast DDS profile a run used;
- :mod:`.image_runs`, :mod:`.event_stream`, :mod:`.event_runs`: the depth runs, the synthetic event
  messages, the event runs (each beside its bare pipeline);
- :mod:`.summary` and :mod:`.tables`: headline numbers derived from the runs, and the printed tables.
"""

WIDTH, HEIGHT = 640, 480  # the sensor both nodes are fed: VGA depth frames and a 640x480 event camera
