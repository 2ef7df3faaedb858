"""The headline numbers derived from the runs: node overhead, event node maximum rate, targets, notes, variants side by side.

Headlines come from the shipped runs only (spin_nodes' executor, the node's own input QoS,
``scripts/in-env``'s Fast DDS profile); the variants are shown beside them, never instead.
"""

from __future__ import annotations

from typing import Any

from bench.node_bench.stats import fmt

VARIANT_TAGS = {"multi_threaded_executor": "multi-exec", "no_fastdds_profile": "no-profile"}


def labelled_runs(result: dict[str, Any], kind: str) -> list[tuple[str, dict[str, Any]]]:
    """(variant tag, run) of the shipped runs (tag '') and then of every variant, for ``kind`` image_runs / event_runs."""
    out = [("", run) for run in result.get(kind, [])]
    for name, variant in result.get("variants", {}).items():
        out += [(VARIANT_TAGS.get(name, name), run) for run in variant.get(kind, [])]
    return out


def summarise(result: dict[str, Any]) -> None:
    """Headline keys from the shipped runs (node overhead, event node maximum rate, targets); variants side by side."""
    image = [r for r in result["image_runs"] if r["latency_ms"]["p50"] is not None]
    headline = next((r for r in image if r["rate_hz"] == "10"), image[0] if image else None)
    result["node_overhead_ms"] = headline["node_overhead_ms"] if headline else None
    result["node_overhead_vs_inference_ms"] = headline["node_overhead_vs_inference_ms"] if headline else None
    result["node_overhead_vs_in_node_segment_ms"] = headline.get("node_overhead_vs_in_node_segment_ms") if headline else None
    result["node_overhead_vs_paced_bare_ms"] = headline.get("node_overhead_vs_paced_bare_ms") if headline else None
    result["node_overhead_run"] = (f"{headline['rate_hz']} Hz, input_qos {headline['input_qos']}, {headline['executor']}"
                                   if headline else None)
    evt3 = [r for r in result["event_runs"] if r["message_type"] == "event_packet"]
    packed = [r for r in result["event_runs"] if r["message_type"] == "packed"]
    result["event_node_max_mev_s"] = max_rate_kept(evt3, "keeps_up")
    result["event_node_max_mev_s_strict"] = max_rate_kept(evt3, "keeps_up_strict")
    result["event_node_max_mev_s_packed"] = max_rate_kept(packed, "keeps_up")
    result["event_node_max_mev_s_packed_strict"] = max_rate_kept(packed, "keeps_up_strict")
    max_rate = max((r["rate_mev_s"] for r in evt3), default=None)
    result["where_time_goes"] = [where_time_goes(r) for r in result["event_runs"] if r["rate_mev_s"] == max_rate] + [
        where_time_goes(r, name) for name, variant in result.get("variants", {}).items()
        for r in variant.get("event_runs", []) if r["rate_mev_s"] == max_rate]
    result["variant_comparison"] = variant_comparison(result)
    result["targets"] = {
        "node_overhead_le_5_ms": result["node_overhead_ms"] is not None and result["node_overhead_ms"] <= 5,
        "event_node_keeps_up_50_mev_s": any(r["rate_mev_s"] >= 50 and r["keeps_up_strict"] for r in evt3),
    }
    result["notes"] = notes(result, evt3)


def max_rate_kept(runs: list[dict[str, Any]], flag: str) -> float | None:
    """The highest tested rate up to which every tested rate kept up (``None`` if the lowest did not)."""
    best = None
    for run in sorted(runs, key=lambda r: r["rate_mev_s"]):
        if not run[flag]:
            break
        best = run["rate_mev_s"]
    return best


def where_time_goes(run: dict[str, Any], variant: str = "") -> dict[str, Any]:
    """CPU per stage of one event run, in cores (1.0 = one core busy the whole run), from the node's timing hook.

    The hook times decode and accumulation together (``frame_source``); their split on one core
    without ROS is in ``bare.events.ms_per_mev_one_core``.
    """
    timers = run["node_timers_ms"]
    seconds = run["seconds"] + run["drain_s"]

    def cores(key: str) -> float:
        return round(timers.get(key, {}).get("sum", 0.0) / 1e3 / seconds, 3)

    frame_source = cores("frame_source")
    callback = cores("callback")
    threads = run["node_thread_cores"]
    workers = sum(v for k, v in threads.items() if k.startswith("executor workers"))
    spin = sum(v for k, v in threads.items() if k.startswith("executor spin"))
    per_s = (run["messages_received"] or 0) / seconds
    return {
        "run": f"{run['message_type']} {run['rate_mev_s']:g} Mev/s, {run['executor']}"
               + (f" (variant {variant})" if variant else ""),
        "messages_per_s": round(per_s, 1),
        "node_us_per_message_all_threads": round(run["node_process_cores"] / per_s * 1e6, 1) if per_s else None,
        "node: rclpy executor (wait set, take, deserialize: executor thread CPU outside the callback)":
            round(max(0.0, spin + workers - callback), 3),
        "node: frame source (decode + accumulate + stamping)": frame_source,
        "node: rest of callback (edge frame hand-over)": round(callback - frame_source, 3),
        "node: inference thread (segment + publish)": cores("process"),
        "node: all threads": run["node_process_cores"],
        "node threads": run["node_thread_cores"],
        "bench (publisher) threads": run["bench_thread_cores"],
        "publish() calls": round(run["publish_call_ms"]["sum"] / 1e3 / seconds, 3),
        "machine busy": run["machine_busy_cores"],
        "other processes": run["other_processes_cores"],
    }


def brief(run: dict[str, Any] | None) -> dict[str, Any] | None:
    """The few numbers of one run that the variant comparison shows."""
    if run is None:
        return None
    if "rate_hz" in run:
        return {"executor": run["executor"], "masks_received": run["masks_received"], "frames_published": run["frames_published"],
                "latency_p50_ms": run["latency_ms"]["p50"], "latency_p99_ms": run["latency_ms"]["p99"],
                "node_overhead_ms": run.get("node_overhead_ms")}
    latency = run["latency_slice_end_to_mask_ms"]
    return {"executor": run["executor"], "events_lost_fraction": run["events_lost_fraction"],
            "frame_drop_fraction": run["frame_drop_fraction"], "latency_p50_ms": latency["p50"], "latency_p99_ms": latency["p99"],
            "node_process_cores": run["node_process_cores"], "keeps_up_strict": run["keeps_up_strict"]}


def variant_comparison(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Each variant run beside the shipped run at the same rate."""
    rows = []
    for name, variant in result.get("variants", {}).items():
        for run in variant.get("image_runs", []):
            shipped = next((r for r in result["image_runs"] if r["rate_hz"] == run["rate_hz"]), None)
            rows.append({"variant": name, "run": f"image {run['rate_hz']} Hz", "shipped": brief(shipped),
                         "with_variant": brief(run)})
        for run in variant.get("event_runs", []):
            shipped = next((r for r in result["event_runs"] if r["message_type"] == run["message_type"]
                            and r["rate_mev_s"] == run["rate_mev_s"]), None)
            rows.append({"variant": name, "run": f"{run['message_type']} {run['rate_mev_s']:g} Mev/s", "shipped": brief(shipped),
                         "with_variant": brief(run)})
    return rows


def notes(result: dict[str, Any], evt3: list[dict[str, Any]]) -> list[str]:
    """Plain-language findings derived from the runs (nothing here is typed in by hand)."""
    out = []
    if "dds" in result and not result["dds"].get("fastdds_profiles_file"):
        out.append("FASTDDS_DEFAULT_PROFILES_FILE was unset: the shipped runs used Fast DDS's built-in transports, "
                   "not scripts/in-env's profile")
    lossy = [r for r in evt3 if r["keeps_up"] and not r["keeps_up_strict"]]
    if lossy:
        worst = max(lossy, key=lambda r: r["events_lost_fraction"] or 0)
        out.append(f"event_node_max_mev_s counts frames only: every 50 ms window still completes when events are lost; "
                   f"at {worst['rate_mev_s']:g} Mev/s the node lost {worst['events_lost_fraction']:.0%} of the events and "
                   f"answered {worst['latency_slice_end_to_mask_ms']['p50']:.0f} ms after the slice end (p50)")

    def words(run: dict[str, Any]) -> str:
        if "masks_received" in run and "frames_published" in run:
            return (f"{run['masks_received']}/{run['frames_published']} frames answered, latency p50 "
                    f"{fmt(run['latency_p50_ms'])} ms")
        return (f"{run['events_lost_fraction']:.1%} of events lost, {run['frame_drop_fraction']:.1%} frames dropped, latency "
                f"p50 {fmt(run['latency_p50_ms'])} ms, {run['node_process_cores']} cores")

    for row in result.get("variant_comparison", []):
        if row["shipped"] and row["with_variant"]:
            out.append(f"{row['run']}: shipped {words(row['shipped'])}; {row['variant']} {words(row['with_variant'])}")
    return out
