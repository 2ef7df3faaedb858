"""``python -m madm_ros.events info``: real recordings, generated files, and unusable input."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from madm_ros.atomic_io import atomic_write_png
from madm_ros.errors import DecodeError, InputError
from madm_ros.events.__main__ import main
from madm_ros.events.info import describe, first_edge_frame
from tests.madm_ros.events.test_event_files import T_OFFSET_US, make_events, write_aedat4, write_dsec

RAW = "event_camera/files/prophesee_gen3_640x480_evt2.raw"
BAG = "event_camera/ros2_bags/test_events_1"
SUMMARY_KEYS = ("events", "width", "height", "t_first_us", "t_last_us", "encoding", "dropped")


def summary(report: dict) -> dict:
    return {key: report[key] for key in SUMMARY_KEYS}


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "madm_ros.events", *args], capture_output=True, text=True, timeout=120, check=False
    )


# --- real recordings ----------------------------------------------------------------------------


def test_info_on_the_real_prophesee_raw_file_reports_its_published_counts(shared_data: Path) -> None:
    report = describe(shared_data / RAW)
    assert summary(report) == {
        "events": 521_252,
        "width": 640,
        "height": 480,
        "t_first_us": 913_716_224,
        "t_last_us": 913_812_095,
        "encoding": "evt2",
        "dropped": 0,
    }
    assert (report["format"], report["header"]["evt"], report["stats"]["events"]) == ("prophesee_raw", "2.0", 521_252)


def test_info_on_the_real_bag_reports_its_evt3_events(shared_data: Path) -> None:
    report = describe(shared_data / BAG)
    assert {key: report[key] for key in ("events", "width", "height", "encoding", "format")} == {
        "events": 343_474,
        "width": 640,
        "height": 480,
        "encoding": "evt3",
        "format": "rosbag2",
    }
    assert report["t_first_us"] < report["t_last_us"]
    losses = ("out_of_range", "bad_words", "truncated_bytes", "time_backwards", "duplicate_packets")
    assert report["dropped"] == sum(report["stats"][k] for k in losses)


def test_info_on_the_real_bag_with_an_unknown_topic_exits_2_listing_the_topics(
    shared_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["info", str(shared_data / BAG), "--topic", "/dvs/events"]) == 2
    err = capsys.readouterr().err
    assert "has no topic '/dvs/events'; it has: /event_camera/events (event_camera_msgs/msg/EventPacket)" in err


def test_info_frame_option_writes_a_640x480_png_of_the_first_window(shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "frame.png"
    result = run_cli("info", str(shared_data / RAW), "--frame", str(out), "--window-us", "20000")

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["events"] == 521_252
    assert report["frame"] == {"path": str(out), "window_us": 20_000}
    image = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    assert (image.shape, image.dtype) == ((480, 640), np.uint8)
    assert np.count_nonzero(image) > 1_000
    assert list(tmp_path.iterdir()) == [out]  # no temporary file left behind


def test_first_edge_frame_only_draws_events_of_the_first_window(shared_data: Path) -> None:
    short = first_edge_frame(shared_data / RAW, window_us=1_000)
    long = first_edge_frame(shared_data / RAW, window_us=50_000)
    assert 0 < np.count_nonzero(short) < np.count_nonzero(long)
    assert np.all(long >= short)  # more events only ever add


# --- generated files ----------------------------------------------------------------------------


def test_info_on_a_generated_aedat4_file_reports_what_was_written(tmp_path: Path) -> None:
    events = make_events(2_000, width=346, height=260, t0=1_700_000_000_000_000, duration_us=100_000, seed=7)
    path = write_aedat4(tmp_path / "rec.aedat4", {"events": (events, (346, 260))})
    report = describe(path)
    assert summary(report) == {
        "events": 2_000,
        "width": 346,
        "height": 260,
        "t_first_us": int(events.t[0]),
        "t_last_us": int(events.t[-1]),
        "encoding": "aedat4",
        "dropped": 0,
    }
    assert report["on_events"] == int(events.p.sum())


def test_info_on_a_generated_dsec_file_reports_absolute_times(tmp_path: Path) -> None:
    events = make_events(5_000, width=640, height=480, t0=T_OFFSET_US + 10, duration_us=80_000, seed=8)
    path = write_dsec(tmp_path / "events.h5", events, t_offset=T_OFFSET_US, compress=False)
    report = describe(path, max_events=1_234)  # several chunks
    assert summary(report) == {
        "events": 5_000,
        "width": 640,
        "height": 480,
        "t_first_us": int(events.t[0]),
        "t_last_us": int(events.t[-1]),
        "encoding": "dsec",
        "dropped": 0,
    }
    assert report["t_offset_us"] == T_OFFSET_US
    assert report["stats"]["packets"] == 5  # ceil(5000 / 1234) chunks were read


def test_info_on_a_ros1_bag_of_dvs_event_arrays_reports_its_events(tmp_path: Path) -> None:
    from rosbags.rosbag1 import Writer
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS1_NOETIC)  # as a ROS 1 driver (dvs_ros_driver) defines and records them
    store.register({**get_types_from_msg("uint16 x\nuint16 y\ntime ts\nbool polarity\n", "dvs_msgs/msg/Event"),
                    **get_types_from_msg("Header header\nuint32 height\nuint32 width\nEvent[] events\n",
                                         "dvs_msgs/msg/EventArray")})
    types = store.types
    path = tmp_path / "dvs.bag"
    with Writer(path) as writer:
        connection = writer.add_connection("/dvs/events", "dvs_msgs/msg/EventArray", typestore=store)
        for i in range(3):
            stamp = types["builtin_interfaces/msg/Time"]
            events = [types["dvs_msgs/msg/Event"](x=j, y=2 * j, ts=stamp(sec=100 + i, nanosec=1000 * j), polarity=j % 2 == 1)
                      for j in range(5)]
            header = types["std_msgs/msg/Header"](seq=i, stamp=stamp(sec=100 + i, nanosec=0), frame_id="dvs")
            message = types["dvs_msgs/msg/EventArray"](header=header, height=260, width=346, events=events)
            writer.write(connection, (100 + i) * 10**9, store.serialize_ros1(message, "dvs_msgs/msg/EventArray"))

    report = describe(path)
    assert summary(report) == {"events": 15, "width": 346, "height": 260, "t_first_us": 100_000_000,
                               "t_last_us": 102_000_004, "encoding": "dvs_msgs/msg/EventArray", "dropped": 0}
    assert (report["format"], report["topic"], report["messages"], report["problem"]) == ("rosbag1", "/dvs/events", 3, "")


# --- unusable input -----------------------------------------------------------------------------


def test_info_on_random_bytes_exits_2_naming_the_file_without_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "noise.bin"
    path.write_bytes(np.random.default_rng(0).bytes(10_000))
    result = run_cli("info", str(path))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr
    assert f"{path}: unknown event file format" in result.stderr


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("empty.raw", b"", r"empty file"),
        ("cut.h5", "truncated-h5", r"cannot open as HDF5 \(corrupt or truncated file"),
        ("half.aedat4", "truncated-aedat4", r"corrupt or truncated AEDAT4 file"),
        ("header_only.raw", b"% evt 2.0\n% format EVT2;height=480;width=640\n% end\n", None),
    ],
)
def test_info_on_corrupt_files_exits_2_with_a_one_line_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, content: bytes | str, problem: str | None
) -> None:
    path = tmp_path / name
    if content == "truncated-h5":
        events = make_events(5_000, width=640, height=480, t0=T_OFFSET_US, duration_us=80_000, seed=9)
        full = write_dsec(tmp_path / "full.h5", events, t_offset=T_OFFSET_US, compress=False)
        path.write_bytes(full.read_bytes()[:5_000])
    elif content == "truncated-aedat4":
        events = make_events(5_000, width=64, height=48, t0=0, duration_us=80_000, seed=9)
        full = write_aedat4(tmp_path / "full.aedat4", {"events": (events, (64, 48))})
        path.write_bytes(full.read_bytes()[:3_000])
    else:
        assert isinstance(content, bytes)
        path.write_bytes(content)

    code = main(["info", str(path)])
    out, err = capsys.readouterr()

    if problem is None:  # a header without events is a valid, empty recording
        assert code == 0, err
        assert json.loads(out)["events"] == 0
        return
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith(f"madm_ros.events info: {path}: ")
    assert re.search(problem, err)


def test_info_on_a_directory_without_a_bag_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "notes.txt").write_text("not a bag")
    assert main(["info", str(tmp_path)]) == 2
    assert "directory is not a rosbag2 bag (no metadata.yaml, .db3 or .mcap file inside)" in capsys.readouterr().err


def test_info_on_a_bag_directory_with_broken_metadata_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "metadata.yaml").write_text("rosbag2_bagfile_information: [\n")
    assert main(["info", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"cannot open {tmp_path} as a bag (" in err and err.count("\n") == 1
    assert "metadata.yaml is not valid YAML" in err and "the folder holds no .db3, .mcap or .bag file" in err
    assert "check that it is a complete rosbag2 folder" in err


def test_describe_raises_typed_errors_for_missing_and_unknown_input(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"missing\.raw: no such file or directory"):
        describe(tmp_path / "missing.raw")
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(DecodeError, match=r"x\.txt: unknown event file format"):
        describe(tmp_path / "x.txt")


def test_topic_option_is_refused_for_files_that_are_not_bags(tmp_path: Path) -> None:
    events = make_events(10, width=64, height=48, t0=0, duration_us=1_000, seed=10)
    path = write_aedat4(tmp_path / "rec.aedat4", {"events": (events, (64, 48))})
    with pytest.raises(InputError, match=r"--topic only applies to rosbag2 input"):
        describe(path, topic="/events")


def test_a_raw_file_without_its_size_is_read_with_sensor_size_and_other_formats_refuse_it(
    shared_data: Path, tmp_path: Path
) -> None:
    from madm_ros.events.raw_files import RawFile

    body = (shared_data / RAW).read_bytes()[RawFile(shared_data / RAW)._body_offset:]
    nosize = tmp_path / "nosize.raw"
    nosize.write_bytes(b"% evt 2.0\n" + body)  # no size and no Gen3 plugin line
    refused = run_cli("info", str(nosize))
    assert refused.returncode == 2 and "--sensor-size WxH" in refused.stderr
    read = run_cli("info", str(nosize), "--sensor-size", "640x480")
    assert read.returncode == 0, read.stderr
    report = json.loads(read.stdout)
    assert (report["width"], report["height"], report["events"], report["geometry_source"]) == (640, 480, 521_252, "caller")
    assert run_cli("info", str(nosize), "--sensor-size", "640").returncode == 2  # argparse: WIDTHxHEIGHT
    with pytest.raises(InputError, match=r"--sensor-size only applies to Prophesee RAW files"):
        describe(shared_data / BAG, sensor_size=(640, 480))


def test_data_of_another_encoding_than_the_header_says_is_described_with_a_warning(
    shared_data: Path, tmp_path: Path
) -> None:
    mislabelled = tmp_path / "evt2_as_evt3.raw"
    mislabelled.write_bytes((shared_data / RAW).read_bytes().replace(b"% evt 2.0\n", b"% evt 3.0\n", 1))
    assert describe(shared_data / RAW)["warning"] == ""
    result = run_cli("info", str(mislabelled))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["dropped"] > report["events"] and "may not be evt3" in report["warning"]
    assert "warning" in result.stderr and "check the header's format" in result.stderr
    small = describe(shared_data / RAW, sensor_size=(100, 100))  # right encoding, wrong size: blamed on the size
    assert small["warning"].startswith(f"most events ({small['stats']['out_of_range']}) lie outside the 100x100 sensor")


def test_png_writes_replace_the_target_atomically_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    out = tmp_path / "f.png"
    out.write_bytes(b"old")
    image = np.arange(12, dtype=np.uint8).reshape(3, 4)
    atomic_write_png(out, image)
    np.testing.assert_array_equal(cv2.imread(str(out), cv2.IMREAD_UNCHANGED), image)
    assert list(tmp_path.iterdir()) == [out]


def test_help_explains_every_format_and_option() -> None:
    result = run_cli("info", "--help")
    assert result.returncode == 0
    for phrase in ("Prophesee RAW", "AEDAT4", "DSEC events.h5", "rosbag2", "--topic", "--frame", "--window-us"):
        assert phrase in result.stdout
