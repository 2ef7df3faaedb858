"""Command line: ``python -m madm_ros.events info PATH [--topic T] [--sensor-size WxH] [--frame OUT.png] [--window-us N]``.

Only argument parsing lives here; the work is done by :mod:`madm_ros.events.info`.
Exit codes: 0 success, 2 unusable input (one line on stderr naming the file and the problem). A bag
that can be read only in part (a truncated file) is described up to the cut: exit code 0, the
reason in the report's ``problem`` and one warning line on stderr; so is a recording that lost
more than it decoded (``warning``: most likely the wrong encoding).
"""

from __future__ import annotations

import argparse
import json
import sys

from madm_ros.errors import MadmError

_INFO_DESCRIPTION = """\
Print one JSON object describing an event recording: events, width, height, t_first_us,
t_last_us (µs, first/last event in stream order), encoding, dropped (events/bytes lost by the
decoder: out_of_range + bad_words + truncated_bytes + time_backwards + duplicate_packets) and the
full decoder stats. The input is read chunk by chunk, never all at once.

Formats, recognised by content:
  Prophesee RAW   '%' header lines then EVT 2.0/2.1/3.0 words (.raw)
  AEDAT4          iniVation DV file starting with '#!AER-DAT4.0' (.aedat4); first event stream
  DSEC events.h5  HDF5 with /events/{x,y,t,p}, /ms_to_idx, /t_offset; times include t_offset
                  (Blosc/ZSTD-compressed files need the hdf5plugin package)
  rosbag2         bag directory (metadata.yaml) or .db3/.mcap file holding
                  event_camera_msgs/EventPacket messages; other rosbag2 versions and
                  truncated MCAP files read as in every madm tool ("problem", "read_note")
  rosbag1         ROS 1 .bag file with event messages

Exit status 2 with a one-line message for a missing, unknown, empty or corrupt input. A bag
that can be read only in part (a truncated file) is described up to the cut: exit status 0,
the reason in "problem" and a warning line on stderr. A recording that lost more words or
events than it decoded (most likely data of another encoding than its header names) is
described with the reason in "warning" and a warning line on stderr."""


def _sensor_size(text: str) -> tuple[int, int]:
    """``WxH`` → (width, height), both positive."""
    width, sep, height = text.lower().partition("x")
    if not (sep and width.isdigit() and height.isdigit() and int(width) > 0 and int(height) > 0):
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 1280x720, got {text!r}")
    return int(width), int(height)


def build_parser() -> argparse.ArgumentParser:
    """The ``madm_ros.events`` argument parser (subcommand ``info``)."""
    parser = argparse.ArgumentParser(
        prog="python -m madm_ros.events", description="Event-camera recording tools (ROS-free)."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    info = commands.add_parser(
        "info",
        help="describe an event recording as JSON",
        description=_INFO_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    info.add_argument("path", help="Prophesee .raw, .aedat4, DSEC events.h5, rosbag2 directory / .db3 / .mcap, or ROS 1 .bag")
    info.add_argument(
        "--topic", default=None, help="rosbag2 only: event topic to read (default: the only EventPacket topic)"
    )
    info.add_argument(
        "--sensor-size", type=_sensor_size, default=None, metavar="WxH",
        help="Prophesee RAW only: the sensor size, for files whose header does not say it or says it wrong "
        "(e.g. 1280x720; it overrides the header's)",
    )
    info.add_argument(
        "--frame",
        metavar="OUT.png",
        default=None,
        help="also write the edge frame of the first --window-us of events as a PNG (atomically)",
    )
    info.add_argument(
        "--window-us",
        type=int,
        default=50_000,
        metavar="N",
        help="time window of the --frame edge frame in microseconds (default: 50000)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    from madm_ros.atomic_io import atomic_write_png
    from madm_ros.events.info import describe, first_edge_frame

    try:
        report = describe(args.path, topic=args.topic, sensor_size=args.sensor_size)
        if args.frame is not None:
            frame = first_edge_frame(args.path, topic=args.topic, sensor_size=args.sensor_size, window_us=args.window_us)
            report["frame"] = {"path": str(atomic_write_png(args.frame, frame)), "window_us": args.window_us}
    except (MadmError, OSError, ImportError) as error:
        message = " ".join(str(error).split())  # one line, whatever the library put in it
        print(f"madm_ros.events info: {message}", file=sys.stderr)
        return 2
    if report.get("problem"):
        print(f"madm_ros.events info: warning: {args.path} was read only in part: {report['problem']}", file=sys.stderr)
    if report["warning"]:
        print(f"madm_ros.events info: warning: {args.path}: {report['warning']}", file=sys.stderr)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
