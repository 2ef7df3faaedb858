from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from madm_ros.errors import DecodeError
from madm_ros.events.codecs import encode_evt3
from madm_ros.events.raw_files import RawFile
from madm_ros.events.types import Events


def sha3(array: np.ndarray) -> str:
    return hashlib.sha3_224(array.tobytes()).hexdigest()


def test_real_gen3_evt2_raw_decodes_to_the_published_count_and_digests(evt2_raw: Path) -> None:
    raw = RawFile(evt2_raw)
    ev = raw.read_all()
    got = {
        "header": (raw.encoding, raw.width, raw.height, raw.geometry_source),
        "events": len(ev),
        "t_range": (int(ev.t[0]), int(ev.t[-1])),
        "t": sha3(ev.t.astype(np.uint64)),
        "x": sha3(ev.x),
        "y": sha3(ev.y),
        "on": sha3(ev.p.astype(bool)),
        "dropped": raw.stats.dropped_events + raw.stats.bad_words + raw.stats.truncated_bytes,
    }
    assert got == {
        "header": ("evt2", 640, 480, "default for Gen3 plugin hal_plugin_gen3_fx3"),
        "events": 521_252,
        "t_range": (913_716_224, 913_812_095),
        "t": "9855ba39c1baea316ae623b72466e420df60a7510248391856eb4eaf",
        "x": "93fc6cff19b483fd48ca53345c6c1cf05123681d7b7272a1717e9303",
        "y": "07cfaef58e5fa71ce9910ed5b88fb7e9fcf71e4a8654cc2c4666f1ae",
        "on": "d2b5e9c4047f4c431937b24cd46c8b504e055372b0ded1df77f0ffa1",
        "dropped": 0,
    }


def test_chunks_respect_max_events_and_join_to_the_whole_file(evt2_raw: Path) -> None:
    raw = RawFile(evt2_raw)
    chunks = list(raw.chunks(max_events=100_000))
    assert max(len(c) for c in chunks) == 100_000
    whole = raw.read_all()
    joined = Events.concatenate(chunks)
    assert np.array_equal(joined.t, whole.t)
    assert np.array_equal(joined.x, whole.x)


def test_evt3_file_with_format_line_reads_size_from_it(tmp_path: Path) -> None:
    ev = Events.from_arrays([1, 1279, 5], [2, 719, 3], [10, 20, 20], [1, 0, 1])
    path = tmp_path / "a.raw"
    path.write_bytes(
        b"% camera_integrator_name Prophesee\n% format EVT3;height=720;width=1280\n% end\n" + encode_evt3(ev)
    )
    raw = RawFile(path)
    assert (raw.encoding, raw.width, raw.height, raw.geometry_source) == ("evt3", 1280, 720, "format line")
    got = raw.read_all()
    assert got.x.tolist() == [1, 1279, 5]
    assert got.t.tolist() == [10, 20, 20]


def test_geometry_line_gives_the_size_and_a_cut_trailing_word_is_counted(tmp_path: Path) -> None:
    path = tmp_path / "b.raw"
    path.write_bytes(b"% evt 3.0\n% geometry 346x260\n" + encode_evt3(Events.from_arrays([3], [4], [5], [1])) + b"\x07")
    raw = RawFile(path)
    assert (raw.width, raw.height, raw.geometry_source) == (346, 260, "geometry line")
    assert len(raw.read_all()) == 1
    assert raw.stats.truncated_bytes == 1


def test_file_without_header_raises_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "plain.raw"
    path.write_bytes(b"\x00\x01\x02\x03")
    with pytest.raises(DecodeError, match=r"plain\.raw is not a Prophesee RAW file"):
        RawFile(path)


def test_unsupported_evt_version_raises_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "evt21.raw"
    path.write_bytes(b"% evt 2.1\n% geometry 640x480\n")
    with pytest.raises(DecodeError, match=r"evt21\.raw: unsupported event format 'evt 2\.1'"):
        RawFile(path)


def test_unknown_sensor_size_without_gen3_plugin_raises(tmp_path: Path) -> None:
    path = tmp_path / "nosize.raw"
    path.write_bytes(b"% evt 3.0\n% plugin_name hal_plugin_imx636\n")
    with pytest.raises(DecodeError, match=r"nosize\.raw: RAW header has no sensor size.*--sensor-size WxH"):
        RawFile(path)
    assert RawFile(path, width=1280, height=720).width == 1280


def test_binary_garbage_in_the_header_raises(tmp_path: Path) -> None:
    path = tmp_path / "bad.raw"
    path.write_bytes(b"% evt 3.0\n%\xff\xfe\n")
    with pytest.raises(DecodeError, match=r"bad\.raw has a non-ASCII line"):
        RawFile(path)


def test_missing_file_raises_decode_error(tmp_path: Path) -> None:
    with pytest.raises(DecodeError, match="cannot read RAW file"):
        RawFile(tmp_path / "missing.raw")
