"""bench/node_latency.py at micro size: the JSON has every key with sane values (never wall-clock thresholds)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bench" / "node_latency.py"


def load_script():
    spec = importlib.util.spec_from_file_location("node_latency", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_synthetic_stream_is_a_sorted_sensor_readout_that_evt3_carries_exactly():
    pytest.importorskip("numba")
    from madm_ros.events.codecs import PacketDecoder, encode_evt3

    bench = load_script()
    events = bench.edge_scene(20_000, 10_000, 3)
    assert len(events) == 20_000 and events.t[0] == 0 and events.t[-1] < 10_000
    assert np.all(np.diff(events.t) >= 0)
    assert events.x.max() < bench.WIDTH and events.y.max() < bench.HEIGHT and set(np.unique(events.p)) <= {0, 1}
    decoded = PacketDecoder("evt3", bench.WIDTH, bench.HEIGHT).decode(encode_evt3(events))
    for field in ("x", "y", "t", "p"):
        assert np.array_equal(getattr(decoded, field), getattr(events, field))


def test_the_maximum_event_rate_is_the_highest_rate_up_to_which_every_rate_kept_up():
    bench = load_script()

    def run(rate, keeps_up, strict, message_type="event_packet", executor="multi"):
        return {"message_type": message_type, "rate_mev_s": rate, "executor": executor, "keeps_up": keeps_up,
                "keeps_up_strict": strict, "frame_drop_fraction": 0.0, "events_lost_fraction": 0.0,
                "node_behind_at_end_s": 0.0, "latency_slice_end_to_mask_ms": {"p50": 60.0},
                "seconds": 1.0, "drain_s": 0.0, "messages_received": 1000, "node_timers_ms": {}, "node_thread_cores": {},
                "node_process_cores": 0.5, "bench_thread_cores": {}, "publish_call_ms": {"sum": 10.0},
                "machine_busy_cores": 1.0, "other_processes_cores": 0.0}

    image = {"rate_hz": "10", "input_qos": "DEFAULT", "executor": "multi", "latency_ms": {"p50": 9.0}, "node_overhead_ms": 4.0,
             "node_overhead_vs_inference_ms": 6.0}
    faster = {**image, "executor": "single", "node_overhead_ms": 1.0}
    runs = [run(1, True, True), run(10, True, False), run(25, False, False), run(50, True, False),
            run(10, True, True, "packed"), run(1, True, True, executor="single"), run(50, True, True, executor="single")]
    result = {"image_runs": [faster, image], "event_runs": runs}
    bench.summarise(result, type("Args", (), {"image_input_qos": "DEFAULT"})())
    assert (result["event_node_max_mev_s"], result["event_node_max_mev_s_strict"]) == (10, 1)
    assert result["event_node_max_mev_s_packed"] == 10 and result["node_overhead_ms"] == 4.0
    assert result["targets"] == {"node_overhead_le_5_ms": True, "event_node_keeps_up_50_mev_s": False}
    assert result["event_node_max_mev_s_single_threaded_executor_strict"] == 50
    assert [w["run"] for w in result["where_time_goes"]] == ["event_packet 50 Mev/s, multi executor",
                                                              "event_packet 50 Mev/s, single executor"]
    assert set(result["executor_comparison"]) == {"multi", "single"}


@pytest.mark.ros
@pytest.mark.slow
def test_a_micro_run_writes_every_key_with_sane_values(tmp_path, tiny_onnx_models, ros_domain):
    pytest.importorskip("rclpy")
    out = tmp_path / "node_latency.json"
    command = [sys.executable, str(SCRIPT), "--json", str(out), "--seconds", "1", "--image-rates", "max", "--rates", "1",
               "--packed-rates", "", "--variant-shm-mb", "0", "--no-best-effort-check", "--executor-variants", "",
               "--bare-runs", "3",
               "--warmup-frames", "1", "--depth-model", str(tiny_onnx_models["depth"]),
               "--events-model", str(tiny_onnx_models["events"]), "--domain-id", str(ros_domain)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())

    for key in ("node_overhead_ms", "node_overhead_definition", "event_node_max_mev_s", "event_node_max_mev_s_definition",
                "machine", "models", "bare", "image_runs", "event_runs", "where_time_goes", "targets", "contended", "load"):
        assert key in result, key
    assert result["machine"]["cpus"] >= 1 and result["machine"]["onnxruntime"]
    assert result["machine"]["ros_domain_id"] == str(ros_domain)
    assert all(m["source"].startswith("--") for m in result["models"].values())
    assert isinstance(result["contended"], bool)
    assert set(result["targets"]) == {"node_overhead_le_5_ms", "event_node_keeps_up_50_mev_s"}

    bare = result["bare"]["depth"]
    assert bare["segment_ms"]["total"]["p50"] > 0 and bare["infer_ms"]["p50"] > 0
    (image,) = result["image_runs"]
    assert image["rate_hz"] == "max" and image["input_qos"] == "DEFAULT"
    assert 1 <= image["masks_received"] <= image["frames_published"]
    assert image["latency_ms"]["p50"] > 0 and isinstance(result["node_overhead_ms"], float)

    (events,) = result["event_runs"]
    assert events["message_type"] == "event_packet" and events["rate_mev_s"] == 1
    assert events["events_published"] == 1_000_000
    assert 0 < events["events_decoded"] <= events["events_published"]
    assert events["frames_expected"] == 19  # 1 s of events from t = 0: windows ending at 50 ms ... 950 ms
    assert events["masks_received"] <= events["edge_frames"] <= events["frames_expected"]
    assert 0 <= events["frame_drop_fraction"] <= 1
    assert result["event_node_max_mev_s"] in (None, 1)
    assert result["where_time_goes"][0]["run"] == "event_packet 1 Mev/s, multi executor"
