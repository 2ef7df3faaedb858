"""AEDAT4 and DSEC readers on files written here from known events by the formats' own tools."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from madm_ros.errors import DecodeError
from madm_ros.events.aedat import AedatFile
from madm_ros.events.dsec import DsecEventsFile, load_rectify_map
from madm_ros.events.types import Events

T_OFFSET_US = 1_650_000_000_123_456  # DSEC-like absolute offset (µs since the Unix epoch)


def make_events(n: int, *, width: int, height: int, t0: int, duration_us: int, seed: int) -> Events:
    """Time-sorted random events, with repeated timestamps as real sensors produce."""
    rng = np.random.default_rng(seed)
    t = np.sort(rng.integers(t0, t0 + duration_us, n))
    return Events.from_arrays(rng.integers(0, width, n), rng.integers(0, height, n), t, rng.integers(0, 2, n))


def assert_same_events(got: Events, expected: Events) -> None:
    for field in ("x", "y", "t", "p"):
        np.testing.assert_array_equal(getattr(got, field), getattr(expected, field), err_msg=field)


# --- AEDAT4 -------------------------------------------------------------------------------------


def write_aedat4(path: Path, streams: dict[str, tuple[Events, tuple[int, int]]]) -> Path:
    """Write one event stream per name with dv-processing's own AEDAT4 writer."""
    import dv_processing as dv

    config = dv.io.MonoCameraWriter.Config("madm_test_camera")
    for name, (_, resolution) in streams.items():
        config.addEventStream(resolution, name)
    writer = dv.io.MonoCameraWriter(str(path), config)
    for name, (events, _) in streams.items():
        store = dv.EventStore()
        for event in zip(events.t.tolist(), events.x.tolist(), events.y.tolist(), (events.p == 1).tolist()):
            store.push_back(event)
        writer.writeEvents(store, name)
    del writer  # the file is completed when the writer is destroyed
    return path


@pytest.fixture(scope="module")
def aedat_events() -> Events:
    return make_events(20_000, width=346, height=260, t0=1_700_000_000_000_000, duration_us=400_000, seed=1)


@pytest.fixture(scope="module")
def aedat_path(tmp_path_factory: pytest.TempPathFactory, aedat_events: Events) -> Path:
    path = tmp_path_factory.mktemp("aedat") / "davis346.aedat4"
    return write_aedat4(path, {"events": (aedat_events, (346, 260))})


def test_aedat4_file_written_by_dv_processing_reads_back_exactly(aedat_path: Path, aedat_events: Events) -> None:
    reader = AedatFile(aedat_path)
    events = reader.read_all()
    assert (reader.width, reader.height, reader.encoding, reader.stream_name) == (346, 260, "aedat4", "events")
    assert_same_events(events, aedat_events)
    assert reader.stats.events == len(aedat_events)
    assert reader.stats.out_of_range == 0


def test_aedat4_chunks_have_the_requested_size_and_join_to_the_whole_stream(
    aedat_path: Path, aedat_events: Events
) -> None:
    chunks = list(AedatFile(aedat_path).chunks(max_events=3_000))
    assert [len(c) for c in chunks] == [3_000] * 6 + [2_000]
    assert_same_events(Events.concatenate(chunks), aedat_events)


def test_aedat4_named_stream_is_read_instead_of_the_first(tmp_path: Path) -> None:
    left = make_events(500, width=64, height=48, t0=10_000, duration_us=5_000, seed=2)
    right = make_events(300, width=32, height=16, t0=10_000, duration_us=5_000, seed=3)
    path = write_aedat4(tmp_path / "stereo.aedat4", {"left": (left, (64, 48)), "right": (right, (32, 16))})

    first = AedatFile(path)
    named = AedatFile(path, stream="right")

    assert (first.stream_name, first.width, first.height) == ("left", 64, 48)
    assert_same_events(first.read_all(), left)
    assert (named.stream_name, named.width, named.height) == ("right", 32, 16)
    assert_same_events(named.read_all(), right)


def test_aedat4_unknown_stream_name_is_refused_with_the_available_names(aedat_path: Path) -> None:
    with pytest.raises(DecodeError, match=r"no event stream named 'dvs'; event streams: 'events'"):
        AedatFile(aedat_path, stream="dvs")


def test_aedat4_events_outside_the_sensor_are_dropped_and_counted(tmp_path: Path) -> None:
    events = Events.from_arrays([1, 70, 3], [2, 2, 50], [100, 200, 300], [1, 0, 1])
    path = write_aedat4(tmp_path / "oor.aedat4", {"events": (events, (64, 48))})
    reader = AedatFile(path)
    assert_same_events(reader.read_all(), events[np.array([0])])
    assert (reader.stats.events, reader.stats.out_of_range) == (1, 2)


def test_aedat4_truncated_file_raises_decode_error_naming_the_file(tmp_path: Path, aedat_path: Path) -> None:
    data = aedat_path.read_bytes()
    path = tmp_path / "truncated.aedat4"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DecodeError, match=r"truncated\.aedat4: corrupt or truncated AEDAT4 file"):
        AedatFile(path).read_all()


def test_aedat4_file_without_the_magic_line_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "noise.aedat4"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(DecodeError, match=r"noise\.aedat4: not an AEDAT4 file"):
        AedatFile(path)


# --- DSEC ---------------------------------------------------------------------------------------


def write_dsec(path: Path, events: Events, *, t_offset: int, compress: bool, omit: tuple[str, ...] = ()) -> Path:
    """Write ``events`` (absolute µs) in the DSEC ``events.h5`` layout, optionally Blosc/ZSTD-compressed."""
    t_rel = events.t - t_offset
    ms_to_idx = np.searchsorted(t_rel, np.arange(int(t_rel[-1]) // 1000 + 2) * 1000, side="left")
    filters: dict[str, object] = {}
    if compress:
        import hdf5plugin

        filters = dict(hdf5plugin.Blosc(cname="zstd", clevel=5, shuffle=hdf5plugin.Blosc.SHUFFLE))
    datasets = {
        "events/x": events.x,
        "events/y": events.y,
        "events/t": t_rel.astype(np.uint32),
        "events/p": events.p,
        "ms_to_idx": ms_to_idx.astype(np.uint64),
    }
    with h5py.File(path, "w") as file:
        for name, data in datasets.items():
            if name not in omit:
                file.create_dataset(name, data=data, chunks=(min(4096, len(data)),), **filters)
        if "t_offset" not in omit:
            file.create_dataset("t_offset", data=np.int64(t_offset))
    return path


@pytest.fixture(scope="module")
def dsec_events() -> Events:
    # 60 000 events over 250 ms starting 3.5 ms after t_offset, with a 40 ms gap to exercise empty milliseconds.
    events = make_events(60_000, width=640, height=480, t0=T_OFFSET_US + 3_500, duration_us=250_000, seed=4)
    gap = (events.t >= T_OFFSET_US + 100_000) & (events.t < T_OFFSET_US + 140_000)
    return events[~gap]


@pytest.fixture(scope="module", params=[False, True], ids=["uncompressed", "blosc-zstd"])
def dsec_path(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, dsec_events: Events) -> Path:
    if request.param:
        pytest.importorskip("hdf5plugin", reason="Blosc/ZSTD DSEC files need hdf5plugin (requirements.lock)")
    path = tmp_path_factory.mktemp("dsec") / "events.h5"
    return write_dsec(path, dsec_events, t_offset=T_OFFSET_US, compress=request.param)


def test_dsec_file_reads_back_exactly_with_absolute_times(dsec_path: Path, dsec_events: Events) -> None:
    with DsecEventsFile(dsec_path) as reader:
        assert (reader.width, reader.height, reader.encoding, reader.t_offset_us) == (640, 480, "dsec", T_OFFSET_US)
        assert reader.rectify_map is None
        assert_same_events(reader.read_all(), dsec_events)


def test_dsec_compressed_fixture_is_really_blosc_compressed(tmp_path: Path, dsec_events: Events) -> None:
    pytest.importorskip("hdf5plugin", reason="Blosc/ZSTD DSEC files need hdf5plugin (requirements.lock)")
    path = write_dsec(tmp_path / "events.h5", dsec_events, t_offset=T_OFFSET_US, compress=True)
    with h5py.File(path, "r") as file:
        assert "32001" in file["events/t"]._filters  # the Blosc filter id used by the published DSEC files


def test_dsec_chunks_have_the_requested_size_and_join_to_the_whole_file(dsec_path: Path, dsec_events: Events) -> None:
    with DsecEventsFile(dsec_path) as reader:
        chunks = list(reader.chunks(max_events=10_000))
    assert {len(c) for c in chunks[:-1]} == {10_000}
    assert 0 < len(chunks[-1]) <= 10_000
    assert_same_events(Events.concatenate(chunks), dsec_events)


@pytest.mark.parametrize(
    ("start_ms", "end_ms"),
    [
        (-5.0, 1.0),  # before t_offset: nothing
        (0.0, 3.6),  # ends just after the first events
        (50.0, 50.0),  # empty window
        (60.0, 40.0),  # reversed window
        (99.9, 140.3),  # straddles the gap
        (110.0, 130.0),  # inside the gap
        (250.0, 400.0),  # runs past the last event and past the ms_to_idx table
        (500.0, 600.0),  # entirely after the file
        (-1e3, 1e4),  # everything
    ],
)
def test_dsec_events_between_selects_the_half_open_window_in_absolute_time(
    dsec_path: Path, dsec_events: Events, start_ms: float, end_ms: float
) -> None:
    start, end = T_OFFSET_US + round(start_ms * 1000), T_OFFSET_US + round(end_ms * 1000)
    expected = dsec_events[(dsec_events.t >= start) & (dsec_events.t < end)]
    with DsecEventsFile(dsec_path) as reader:
        assert_same_events(reader.events_between(start, end), expected)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(start=st.integers(-2_000, 262_000), length=st.integers(0, 30_000))
def test_dsec_events_between_equals_a_brute_force_selection(
    dsec_path: Path, dsec_events: Events, start: int, length: int
) -> None:
    t_start, t_end = T_OFFSET_US + start, T_OFFSET_US + start + length
    expected = dsec_events[(dsec_events.t >= t_start) & (dsec_events.t < t_end)]
    with DsecEventsFile(dsec_path) as reader:
        assert_same_events(reader.events_between(t_start, t_end), expected)


def test_dsec_file_missing_datasets_is_refused_naming_them(tmp_path: Path, dsec_events: Events) -> None:
    path = write_dsec(
        tmp_path / "events.h5", dsec_events, t_offset=T_OFFSET_US, compress=False, omit=("ms_to_idx", "t_offset")
    )
    expected = r"events\.h5: not a DSEC events\.h5, missing dataset\(s\) /ms_to_idx, /t_offset"
    with pytest.raises(DecodeError, match=expected):
        DsecEventsFile(path)


def test_dsec_truncated_file_raises_decode_error_naming_the_file(tmp_path: Path, dsec_events: Events) -> None:
    full = write_dsec(tmp_path / "full.h5", dsec_events, t_offset=T_OFFSET_US, compress=False)
    path = tmp_path / "cut.h5"
    path.write_bytes(full.read_bytes()[:20_000])
    with pytest.raises(DecodeError, match=r"cut\.h5: cannot open as HDF5 \(corrupt or truncated file"):
        DsecEventsFile(path)


def test_dsec_events_outside_the_given_sensor_size_are_dropped_and_counted(
    dsec_path: Path, dsec_events: Events
) -> None:
    with DsecEventsFile(dsec_path, width=320, height=240) as reader:
        events = reader.read_all()
    inside = (dsec_events.x < 320) & (dsec_events.y < 240)
    assert_same_events(events, dsec_events[inside])
    assert reader.stats.out_of_range == int((~inside).sum())


def write_rectify_map(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    rectify_map = np.random.default_rng(5).uniform(-10, 650, shape).astype(np.float32)
    with h5py.File(path, "w") as file:
        file.create_dataset("rectify_map", data=rectify_map)
    return rectify_map


def test_dsec_rectify_map_is_loaded_with_its_shape_and_values_but_not_applied(
    tmp_path: Path, dsec_path: Path, dsec_events: Events
) -> None:
    expected = write_rectify_map(tmp_path / "rectify_map.h5", (480, 640, 2))
    with DsecEventsFile(dsec_path, rectify_map_path=tmp_path / "rectify_map.h5") as reader:
        assert reader.rectify_map is not None
        assert (reader.rectify_map.shape, reader.rectify_map.dtype) == ((480, 640, 2), np.float32)
        np.testing.assert_array_equal(reader.rectify_map, expected)
        assert_same_events(reader.read_all(), dsec_events)


def test_dsec_rectify_map_of_the_wrong_shape_is_refused(tmp_path: Path) -> None:
    write_rectify_map(tmp_path / "rectify_map.h5", (440, 640, 2))
    with pytest.raises(DecodeError, match=r"rectify_map has shape \(440, 640, 2\), expected \(480, 640, 2\)"):
        load_rectify_map(tmp_path / "rectify_map.h5")
