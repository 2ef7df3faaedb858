"""Event throughput on one core: our edge-frame accumulator and EVT3 decoder against dv-processing.

Measures, in one run, pinned to one CPU with NUMBA_NUM_THREADS=1, at 640x480:

  (a) ours        madm_ros.events.edge_frames.accumulate (ignore polarity, dv defaults)
  (b) dv          dv.EdgeMapAccumulator accept + generateFrame on a prebuilt EventStore
  (c) dv + load   the same, including filling the EventStore from numpy with push_back
                  (about 1-3 Mev/s, so it runs on fewer events; see --dv-load-events)
  (d) decode      PacketDecoder("evt3", 640, 480).decode of encode_evt3 bytes and of the real
                  bag's payloads (../shared/data/event_camera/ros2_bags/test_events_1); beside it
                  the peer, faery's Rust EVT decoder (faery.evt.Decoder), on the same bytes written
                  as a Prophesee RAW file (it reads files only; the file sits in the page cache)
  (e) decode+acc  EVT3 bytes -> Events -> edge frame, on the real payloads repeated (a fresh
                  decoder per repetition, since a repeated stream goes back in time); falls back
                  to encoded synthetic events, labelled as such, where the bag is absent
  (d''), (e'')    the same two on the real events of a busy Prophesee RAW recording (--raw,
                  ../shared/data/event_camera/files, 5.4 Mev/s) re-encoded by encode_evt3: the
                  bag is a sparse scene (3.3 words per event, no vector words); this stream
                  has the vector words a sensor writes when neighbours fire together
  (f)             decode of one word order at three placements of TIME_HIGH, to show where the
                  time goes on sparse streams: every event as TIME_LOW ADDR_Y ADDR_X, with a
                  TIME_HIGH (same value, as a sensor repeats it) before none, every third, or a
                  random 38 % of the events (the bag's share); same work per word, only the
                  predictability of the word order differs
  copy            np.copyto of a large array (GB/s copied), the memory-bandwidth reference

Streams (events.md section 2): "edge" = six straight edges translating at 0.3-1.2 px/ms with
1.5 px jitter plus 10 % uniform noise; "random" = uniform x, y, p. Timestamps are sorted at a
nominal 10 Mev/s. Each row is the median of --repeats runs after one warm-up run.

    scripts/in-env python bench/event_throughput.py            # prints a table, writes JSON
    scripts/in-env python bench/event_throughput.py --help
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

# Before numba is imported anywhere: one thread, like the node's event path.
os.environ["NUMBA_NUM_THREADS"] = "1"

import numpy as np

from bench.machine import LoadWatch, machine_info
from madm_ros.events.edge_frames import EdgeFrameAccumulator, EdgeFrameConfig, accumulate
from madm_ros.events.types import Events

REPO = Path(__file__).resolve().parents[1]
DEFAULT_BAG = REPO.parent / "shared" / "data" / "event_camera" / "ros2_bags" / "test_events_1"
DEFAULT_RAW = REPO.parent / "shared" / "data" / "event_camera" / "files" / "prophesee_gen3_640x480_evt2.raw"
WIDTH, HEIGHT = 640, 480


# -- synthetic streams -------------------------------------------------------------------------


def edge_stream(n: int, seed: int = 0) -> Events:
    """Six straight edges translating at 0.3-1.2 px/ms with 1.5 px jitter, plus 10 % uniform noise."""
    rng = np.random.default_rng(seed)
    t = np.sort(rng.integers(0, max(n // 10, 1), n))  # nominal 10 Mev/s: n events over n/10 µs
    n_noise = n // 10
    edge = rng.integers(0, 6, n)
    angle = rng.uniform(0, np.pi, 6)[edge]
    speed = rng.uniform(0.3, 1.2, 6)[edge] / 1000.0  # px per µs
    offset = rng.uniform(0, 640, 6)[edge]
    s = rng.uniform(-400, 400, n)  # position along the edge
    d = offset + speed * t + rng.normal(0, 1.5, n)  # position across the edge
    cx, cy = WIDTH / 2, HEIGHT / 2
    x = cx + (d - 320) * np.cos(angle) - s * np.sin(angle)
    y = cy + (d - 320) * np.sin(angle) + s * np.cos(angle)
    x = np.mod(np.rint(x), WIDTH)
    y = np.mod(np.rint(y), HEIGHT)
    noise = rng.permutation(n)[:n_noise]
    x[noise] = rng.integers(0, WIDTH, n_noise)
    y[noise] = rng.integers(0, HEIGHT, n_noise)
    return Events.from_arrays(x, y, t, rng.integers(0, 2, n))


def sparse_word_order(n: int, time_high: str, seed: int = 2) -> bytes:
    """EVT3 bytes of ``n`` events, each ``[TIME_HIGH] TIME_LOW ADDR_Y ADDR_X`` (see row (f)).

    ``time_high``: ``"none"`` (only the first event), ``"every 3rd"`` or ``"random 38 %"``.
    Times never decrease (constant high, rising low), so every event is returned.
    """
    rng = np.random.default_rng(seed)
    index = np.arange(n)
    with_high = {"none": index == 0, "every 3rd": index % 3 == 0, "random 38 %": rng.random(n) < 0.38}[time_high]
    with_high[0] = True  # the stream needs a first TIME_HIGH
    start = np.concatenate(([0], np.cumsum(3 + with_high)[:-1]))
    words = np.empty(int(3 * n + with_high.sum()), np.uint16)
    words[start[with_high]] = 0x8001  # TIME_HIGH, high = 1
    first = start + with_high
    words[first] = 0x6000 | (index * 4095 // max(n - 1, 1))  # TIME_LOW
    words[first + 1] = 0x0000 | rng.integers(0, HEIGHT, n)  # ADDR_Y
    words[first + 2] = 0x2000 | (rng.integers(0, 2, n) << 11) | rng.integers(0, WIDTH, n)  # ADDR_X with polarity
    return words.astype("<u2").tobytes()


def random_stream(n: int, seed: int = 1) -> Events:
    rng = np.random.default_rng(seed)
    t = np.sort(rng.integers(0, max(n // 10, 1), n))
    return Events.from_arrays(rng.integers(0, WIDTH, n), rng.integers(0, HEIGHT, n), t, rng.integers(0, 2, n))


# -- timing ------------------------------------------------------------------------------------


def median_seconds(fn: Callable[[], object], repeats: int, setup: Callable[[], object] | None = None) -> float:
    """Median wall time of ``fn`` over ``repeats`` runs after one warm-up (``setup`` runs untimed before each)."""
    if setup is not None:
        setup()
    fn()
    times = []
    for _ in range(repeats):
        if setup is not None:
            setup()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def dv_store(events: Events) -> object:
    import dv_processing as dv

    store = dv.EventStore()
    for t, x, y, p in zip(events.t.tolist(), events.x.tolist(), events.y.tolist(), events.p.tolist(), strict=False):
        store.push_back(t, x, y, bool(p))
    return store


def dv_frame(store: object, *, polarity: bool = False, neutral: float = 0.0) -> np.ndarray:
    import dv_processing as dv

    accumulator = dv.EdgeMapAccumulator((WIDTH, HEIGHT), 0.25, not polarity, neutral)
    accumulator.accept(store)
    return accumulator.generateFrame().image


def dv_frame_from_numpy(events: Events) -> np.ndarray:
    return dv_frame(dv_store(events))


def push_flush(events: Events, config: EdgeFrameConfig) -> None:
    accumulator = EdgeFrameAccumulator(config)
    accumulator.push(events)
    accumulator.flush()


def decode(payload: bytes) -> Events:
    from madm_ros.events.codecs import PacketDecoder

    return PacketDecoder("evt3", WIDTH, HEIGHT).decode(payload)


def decode_packets(payloads: list[bytes]) -> None:
    from madm_ros.events.codecs import PacketDecoder

    decoder = PacketDecoder("evt3", WIDTH, HEIGHT)
    for payload in payloads:
        decoder.decode(payload)


def decode_accumulate(payload: bytes, copies: int, config: EdgeFrameConfig) -> None:
    """Decode ``payload`` ``copies`` times, each with a fresh decoder (a repeated stream goes back in time)."""
    for _ in range(copies):
        accumulate(decode(payload), config)


def node_path(payloads: list[bytes], config: EdgeFrameConfig) -> None:
    """What the node does per message: decode one payload, push it, keep the frames."""
    from madm_ros.events.codecs import PacketDecoder

    decoder = PacketDecoder("evt3", WIDTH, HEIGHT)
    accumulator = EdgeFrameAccumulator(config)
    for payload in payloads:
        accumulator.push(decoder.decode(payload))


def reencoded_recording(path: Path) -> bytes:
    """EVT3 bytes of every event of the RAW recording ``path``, its first event moved to t = 0."""
    from madm_ros.events.codecs import encode_evt3
    from madm_ros.events.raw_files import RawFile

    events = RawFile(path).read_all()
    return encode_evt3(Events(events.x, events.y, events.t - events.t[0], events.p))


def faery_decode(path: Path) -> int:
    """Events faery's EVT decoder reads from the RAW file ``path`` (the peer of row (d))."""
    import faery

    events = 0
    with faery.evt.Decoder(path, (WIDTH, HEIGHT), "evt3") as decoder:
        for packet in decoder:
            events += len(packet.get("events", ()))
    return events


def read_bag_payloads(bag: Path) -> list[bytes]:
    """Raw EVT3 payloads of every EventPacket in ``bag``, in log order (rosbags, no rclpy)."""
    from madm_ros.events.bags import iter_event_messages

    payloads = []
    for _, _, _, msg in iter_event_messages(bag):
        if msg.encoding != "evt3":
            raise SystemExit(f"{bag}: expected evt3 payloads, got {msg.encoding!r}")
        payloads.append(bytes(msg.events))
    return payloads


# -- the benchmark -----------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, object]:
    os.sched_setaffinity(0, {args.cpu})
    watch = LoadWatch()
    rows: list[dict[str, object]] = []
    notes: list[str] = []

    def row(name: str, stream: str, n: int, seconds: float, unit: str = "Mev/s", amount: float | None = None) -> float:
        rate = (amount if amount is not None else n) / seconds / (1e9 if unit == "GB/s" else 1e6)
        rows.append(
            {"method": name, "stream": stream, "events": n, "median_ms": seconds * 1e3, "rate": rate, "unit": unit}
        )
        print(f"  {name:<52} {stream:<22} {n:>10,} {seconds * 1e3:>10.2f} ms {rate:>9.1f} {unit}", flush=True)
        return rate

    def timed(fn: Callable[..., object], *fn_args: object) -> float:
        return median_seconds(partial(fn, *fn_args), args.repeats)

    config = EdgeFrameConfig(width=WIDTH, height=HEIGHT)
    signed = EdgeFrameConfig(width=WIDTH, height=HEIGHT, polarity="signed", neutral=0.5)
    try:
        import dv_processing  # noqa: F401

        have_dv = True
    except ImportError:
        have_dv = False
        notes.append("dv_processing not importable: rows (b), (c) skipped")

    headline: dict[str, float | None] = dict.fromkeys(
        (
            "ours_accumulate_mev_s",
            "dv_accumulate_mev_s",
            "dv_with_load_mev_s",
            "evt3_decode_mev_s",
            "decode_accumulate_mev_s",
            "copy_gb_s",
        ),
    )
    largest = max(args.sizes)
    sources = {
        "ours_accumulate_mev_s": f"row (a), edge stream, {largest:,} events",
        "dv_accumulate_mev_s": f"row (b), edge stream, {largest:,} events",
        "dv_with_load_mev_s": f"row (c), edge stream, {args.dv_load_events:,} events",
        "copy_gb_s": f"np.copyto of {args.copy_mib} MiB, bytes copied per second",
    }
    print(f"{'method':<54} {'stream':<22} {'events':>10} {'median':>13} {'rate':>15}")
    for n in args.sizes:
        for stream_name, make in (("edge", edge_stream), ("random", random_stream)):
            events = make(n)
            ours = row("(a) ours accumulate (ignore polarity)", stream_name, n, timed(accumulate, events, config))
            row("(a') ours accumulate (signed, neutral 0.5)", stream_name, n, timed(accumulate, events, signed))
            # The stream lasts n/10 µs: ten windows, the last one drawn by flush().
            streaming = EdgeFrameConfig(width=WIDTH, height=HEIGHT, window_us=max(n // 100, 1))

            row("(a'') ours push()+flush(), 10 time windows", stream_name, n, timed(push_flush, events, streaming))
            if stream_name == "edge" and n == largest:
                headline["ours_accumulate_mev_s"] = ours
            if have_dv:
                store = dv_store(events)
                if not np.array_equal(dv_frame(store), accumulate(events, config)) or not np.array_equal(
                    dv_frame(store, polarity=True, neutral=0.5), accumulate(events, signed)
                ):
                    raise SystemExit("ours and dv-processing disagree: the benchmark compares different things")
                dv_rate = row("(b) dv EdgeMapAccumulator accept+generateFrame", stream_name, n, timed(dv_frame, store))
                dv_signed = partial(dv_frame, polarity=True, neutral=0.5)
                row("(b') dv EdgeMapAccumulator, polarity, neutral 0.5", stream_name, n, timed(dv_signed, store))
                if stream_name == "edge" and n == largest:
                    headline["dv_accumulate_mev_s"] = dv_rate
                del store
    if have_dv:
        small = edge_stream(args.dv_load_events)
        seconds = median_seconds(partial(dv_frame_from_numpy, small), max(3, args.repeats // 2))
        rate = row("(c) dv incl. EventStore fill from numpy", "edge", len(small), seconds)
        headline["dv_with_load_mev_s"] = rate
        notes.append(f"(c) runs on {len(small):,} events only: filling dv.EventStore goes through push_back per event")

    try:
        from madm_ros.events.codecs import encode_evt3
    except ImportError as error:
        encode_evt3 = None
        notes.append(f"madm_ros.events.codecs not importable ({error}): rows (d), (e) skipped")
    if encode_evt3 is not None:
        for n in args.sizes:
            payload = encode_evt3(edge_stream(n))
            row("(d) evt3 decode (encode_evt3 bytes)", f"edge, {len(payload) / n:.2f} B/ev", n, timed(decode, payload))
        synthetic = encode_evt3(edge_stream(min(args.sizes)))
        real: list[bytes] | None = None
        if args.bag.is_dir():
            try:
                real = read_bag_payloads(args.bag)
            except Exception as error:
                notes.append(f"could not read {args.bag} ({error}); (d)/(e) use synthetic data")
        else:
            notes.append(f"bag {args.bag} not found: (d)/(e) use encode_evt3 of the synthetic edge stream")
        if real is not None:
            blob = b"".join(real)
            n_real = len(decode(blob))
            stream = f"bag, {len(blob) / n_real:.2f} B/ev"
            decode_rate = row("(d) evt3 decode, real bag (payloads joined)", stream, n_real, timed(decode, blob))
            row(f"(d') evt3 decode, real bag, per packet ({len(real)})", "bag", n_real, timed(decode_packets, real))
            try:
                import faery  # noqa: F401
            except ImportError:
                notes.append("faery not importable: its row (d) skipped")
            else:
                with tempfile.TemporaryDirectory() as folder:
                    raw = Path(folder) / "bag_evt3.raw"
                    raw.write_bytes(f"% evt 3.0\n% geometry {WIDTH}x{HEIGHT}\n% end\n".encode() + blob)
                    if faery_decode(raw) != n_real:
                        raise SystemExit("faery and madm decode different event counts from the bag's bytes")
                    row("(d) faery evt.Decoder (Rust), bag as RAW file", stream, n_real, timed(faery_decode, raw))
            source, data = "bag (repeated)", blob
        else:
            n_synthetic = min(args.sizes)
            decode_rate = row(
                "(d) evt3 decode (fallback: synthetic)", "edge, synthetic", n_synthetic, timed(decode, synthetic)
            )
            source, data = "synthetic edge (no bag)", synthetic
        headline["evt3_decode_mev_s"] = decode_rate
        sources["evt3_decode_mev_s"] = "row (d) on the " + (
            "real bag's payloads, joined" if real else "synthetic fallback"
        )
        sources["decode_accumulate_mev_s"] = f"row (e) on {source}"
        n_once = len(decode(data))
        copies = max(1, args.decode_events // n_once)

        name = f"(e) evt3 decode + accumulate, {copies} copies"
        headline["decode_accumulate_mev_s"] = row(
            name, source, n_once * copies, timed(decode_accumulate, data, copies, config)
        )
        if real is not None:
            node_config = EdgeFrameConfig(width=WIDTH, height=HEIGHT, window_us=50_000)
            row("(e') per packet decode + push(), 50 ms windows", "bag", n_real, timed(node_path, real, node_config))
        if args.raw.is_file():
            recording = reencoded_recording(args.raw)
            n_recording = len(decode(recording))
            stream = f"RAW re-encoded, {len(recording) / n_recording:.2f} B/ev"
            row("(d'') evt3 decode, real events re-encoded", stream, n_recording, timed(decode, recording))
            copies = max(1, args.decode_events // n_recording)
            name = f"(e'') evt3 decode + accumulate, {copies} copies"
            seconds = timed(decode_accumulate, recording, copies, config)
            row(name, "RAW re-encoded", n_recording * copies, seconds)
        else:
            notes.append(f"RAW recording {args.raw} not found: rows (d''), (e'') skipped")

        n_order = min(args.sizes)
        for placement in ("none", "every 3rd", "random 38 %"):
            data = sparse_word_order(n_order, placement)
            if len(decode(data)) != n_order:
                raise SystemExit("row (f): the word-order stream does not decode to every event")
            stream = f"{len(data) / n_order:.2f} B/ev"
            row(f"(f) evt3 decode, TIME_HIGH: {placement}", stream, n_order, timed(decode, data))

    source_array = np.ones(args.copy_mib * 2**20 // 8, dtype=np.int64)
    target_array = np.empty_like(source_array)
    seconds = timed(np.copyto, target_array, source_array)
    name = "memory bandwidth: np.copyto (bytes copied)"
    headline["copy_gb_s"] = row(name, f"{args.copy_mib} MiB", 0, seconds, unit="GB/s", amount=source_array.nbytes)

    info = machine_info(("numba", "dv_processing", "faery"), watch, pinned_cpu=args.cpu,
                        numba_num_threads=os.environ["NUMBA_NUM_THREADS"])
    summary = {
        **headline,
        "sources": sources,
        "details": rows,
        "notes": notes,
        "machine": info,
        "arguments": {
            "sizes": args.sizes,
            "repeats": args.repeats,
            "dv_load_events": args.dv_load_events,
            "decode_events": args.decode_events,
            "copy_mib": args.copy_mib,
            "bag": str(args.bag),
            "raw": str(args.raw),
        },
    }
    ratio = None
    if headline["ours_accumulate_mev_s"] and headline["dv_accumulate_mev_s"]:
        ratio = headline["ours_accumulate_mev_s"] / headline["dv_accumulate_mev_s"]
    summary["ours_over_dv"] = ratio
    print()
    for key, value in headline.items():
        print(f"{key:<26} {value if value is None else round(value, 1)}")
    print(f"{'ours_over_dv':<26} {None if ratio is None else round(ratio, 2)}")
    for note in notes:
        print(f"note: {note}")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument(
        "--cpu", type=int, default=max(os.sched_getaffinity(0)), help="CPU to pin to (default: highest allowed)"
    )
    parser.add_argument(
        "--sizes",
        type=lambda s: int(float(s)),
        nargs="+",
        default=[1_000_000, 10_000_000],
        help="event counts for (a), (b), (d) (default: 1e6 1e7)",
    )
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per row, median reported (default 7)")
    parser.add_argument(
        "--dv-load-events",
        type=lambda s: int(float(s)),
        default=200_000,
        help="events for (c), which fills dv.EventStore per event (default 2e5)",
    )
    parser.add_argument(
        "--decode-events",
        type=lambda s: int(float(s)),
        default=5_000_000,
        help="about this many events for (e), by repeating the real payloads (default 5e6)",
    )
    parser.add_argument("--bag", type=Path, default=DEFAULT_BAG, help=f"EVT3 ROS 2 bag (default {DEFAULT_BAG})")
    parser.add_argument(
        "--raw", type=Path, default=DEFAULT_RAW, help=f"Prophesee RAW recording for (d''), (e'') (default {DEFAULT_RAW})"
    )
    parser.add_argument(
        "--copy-mib", type=int, default=512, help="array size of the copy reference in MiB (default 512)"
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=REPO / "bench" / "results" / "event_throughput.json",
        help="JSON result file (default bench/results/event_throughput.json)",
    )
    args = parser.parse_args(argv)
    summary = run(args)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    temporary = args.output.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(summary, indent=2) + "\n")
    temporary.replace(args.output)  # atomic: a reader never sees half a file
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
