"""The tables ``bench/node_latency.py`` prints: bare pipelines, image runs, event runs, notes, where the time goes."""

from __future__ import annotations

import json
from typing import Any

from bench.node_bench.image_runs import PACED_HZ, PACED_KEY
from bench.node_bench.stats import fmt
from bench.node_bench.summary import VARIANT_TAGS, labelled_runs


def print_tables(result: dict[str, Any]) -> None:
    """Everything a reader needs from one result, shipped runs first and each variant tagged."""
    dds = result.get("dds", {})
    print(f"\nFast DDS profile: {dds.get('fastdds_profiles_file') or dds.get('transports')}")
    if result.get("bare"):
        bare = result["bare"]["depth"]
        print(f"bare depth pipeline (640x480 16UC1, network {bare['network_input_hw']}): segment p50 "
              f"{fmt(bare['segment_ms']['total']['p50'], 2)} ms = preprocess {fmt(bare['segment_ms']['preprocess']['p50'], 2)} "
              f"+ inference {fmt(bare['segment_ms']['inference']['p50'], 2)} + postprocess "
              f"{fmt(bare['segment_ms']['postprocess']['p50'], 2)}; backend.infer {fmt(bare['infer_ms']['p50'], 2)} ms; "
              f"paced at {PACED_HZ} Hz "
              f"{fmt(bare.get(PACED_KEY, {}).get('total', {}).get('p50'), 2)} ms")
    print(f"{'image node':<20}{'in fps':>8}{'out fps':>9}{'masks':>9}{'drops':>7}{'lat p50':>9}{'lat p99':>9}"
          f"{'overhead':>10}{'vs node':>9}{'vs paced':>9}   (ms; overhead = lat p50 - bare segment; "
          f"vs node = - in-node segment; vs paced = - bare segment paced at {PACED_HZ} Hz)")
    for tag, run in labelled_runs(result, "image_runs"):
        label = f"{run['rate_hz'] + (' Hz' if run['rate_hz'] != 'max' else '')} {tag}"
        print(f"{label:<20}{fmt(run['input_fps']):>8}{fmt(run['output_fps']):>9}"
              f"{str(run['masks_received']) + '/' + str(run['frames_published']):>9}{fmt(run['handover_dropped']):>7}"
              f"{fmt(run['latency_ms']['p50'], 2):>9}{fmt(run['latency_ms']['p99'], 2):>9}"
              f"{fmt(run.get('node_overhead_ms'), 2):>10}{fmt(run.get('node_overhead_vs_in_node_segment_ms'), 2):>9}"
              f"{fmt(run.get('node_overhead_vs_paced_bare_ms'), 2):>9}")
    if result.get("bare"):
        events = result["bare"]["events"]
        print(f"\nbare event path, one core: decode {events['mev_s_one_core']['decode_evt3']} Mev/s, accumulate "
              f"{events['mev_s_one_core']['accumulate']} Mev/s, deserialize {events['mev_s_one_core']['deserialize']} Mev/s "
              f"({events['payload_bytes_per_event']} B/event); segment 640x480 edge frame p50 "
              f"{fmt(events['segment_ms']['total']['p50'], 2)} ms")
    print(f"{'event node':<22}{'in Mev/s':>9}{'dec/s':>9}{'lost':>7}{'frames':>8}{'masks':>7}{'drop':>7}"
          f"{'lat p50':>9}{'lat p99':>9}{'behind s':>9}{'node cores':>11}{'ok':>4}")
    for tag, run in labelled_runs(result, "event_runs"):
        label = f"{'evt3' if run['message_type'] == 'event_packet' else 'packed'} {run['rate_mev_s']:g} {tag}"
        latency = run["latency_slice_end_to_mask_ms"]
        frames = f"{run['edge_frames']}/{run['frames_expected']}"
        print(f"{label:<22}{fmt(run['achieved_input_mev_s'], 2):>9}{fmt(run['events_decoded'] / 1e6 / run['seconds'], 2):>9}"
              f"{fmt(100 * (run['events_lost_fraction'] or 0)) + '%':>7}{frames:>8}"
              f"{run['masks_received']:>7}{fmt(100 * (run['frame_drop_fraction'] or 0)) + '%':>7}{fmt(latency['p50']):>9}"
              f"{fmt(latency['p99']):>9}{fmt(run['node_behind_at_end_s'], 2):>9}{fmt(run['node_process_cores'], 2):>11}"
              f"{('yes' if run['keeps_up_strict'] else 'drop' if not run['keeps_up'] else 'lag'):>4}")
    print(f"(executor: {', '.join(sorted({r['executor'] for _, r in labelled_runs(result, 'event_runs')}))}; "
          f"variants: {', '.join(f'{t} = {n}' for n, t in VARIANT_TAGS.items() if n in result.get('variants', {})) or 'none'})")
    for line in result.get("notes", []):
        print("note:", line)
    print("\nwhere the time goes (cores):")
    for item in result.get("where_time_goes", []):
        print(" ", json.dumps(item))
    print(f"\nnode_overhead_ms {result.get('node_overhead_ms')}  event_node_max_mev_s {result.get('event_node_max_mev_s')} "
          f"(strict {result.get('event_node_max_mev_s_strict')})  contended {result.get('contended')}  "
          f"targets {result.get('targets')}")
