"""Generate a synthetic multi-modal driving data set in the generic folder layout.

One random street (:func:`~madm_ros.synthetic.scene.make_scene`) per sequence, or with
``scenes="varied"`` one random street, junction or open area with its own camera pose, light and
sensor settings (:mod:`~madm_ros.synthetic.variety`); the camera drives along it and every frame
is rendered once into a G-buffer that all modalities and the label read, so labels align with
every modality by construction. Events come from ``event_substeps`` extra renders over the
``event_window_us`` before each frame, fed through one event simulator per sequence and
accumulated into an edge frame stamped at the frame time.

Randomness comes only from ``numpy.random.default_rng`` seeded with ``(seed, sequence, purpose[, frame])``,
so a sequence's files depend on the seed and its index alone, not on worker count or order.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from madm_ros.errors import ConfigError, MadmError
from madm_ros.events.edge_frames import EdgeFrameConfig, accumulate
from madm_ros.events.types import Events
from madm_ros.folder_layout import (
    LABELS_DIR,
    META_FILE,
    MODALITY_ENCODINGS,
    FolderMeta,
    frame_name,
    write_image,
)
from madm_ros.palettes import DSEC_11
from madm_ros.preprocessing import MODALITIES
from madm_ros.synthetic.render import Camera, render, shade
from madm_ros.synthetic.scene import Scene, make_scene
from madm_ros.synthetic.sensors import (
    BACKGROUND_HZ,
    DEFAULT_SENSORS,
    DEPTH_MAX_M,
    EVENT_SIMULATOR,
    EventCamera,
    SensorProfile,
    ThermalCamera,
    depth_image,
    intensity,
    rgb_image,
    thermal_image,
)
from madm_ros.synthetic.variety import describe, make_varied_scene, random_sensors

__all__ = [
    "GENERATOR_NAME", "SCENE_SETS", "RenderedFrame", "SynthConfig", "frame_time_us", "generate", "generate_once",
    "render_sequence", "sequence_length", "sequence_record", "sequence_scene", "sequence_sensors",
]

GENERATOR_NAME = "madm_ros.synthetic"
HFOV_DEG = 80.0
"""Horizontal field of view of every synthetic camera, degrees (a wide automotive lens; fx = 305 px at 512 wide)."""
SCENE_SETS = ("street", "varied")
"""``SynthConfig.scenes`` values: today's straight street, or :mod:`~madm_ros.synthetic.variety`'s varied scenes."""
_IN_PROGRESS = ".synth-in-progress"
_OUR_FILE = re.compile(r"^s\d{3}_f\d{5}\.png$|^\..*\.tmp$")


@dataclass(frozen=True)
class SynthConfig:
    """What to generate. Validated on construction (``ConfigError``).

    Attributes:
        frames: Number of labelled frames in total.
        height: Image rows of every modality.
        width: Image columns of every modality.
        seed: Seed of everything random; same seed and config → byte-identical files.
        frames_per_sequence: Frames per street (the last sequence may be shorter); at most 1000
            sequences.
        frame_interval_us: Time between consecutive frames of a sequence, µs (default 200 ms:
            about 2 m of driving, so frames differ but stay one street).
        event_window_us: Events of this window before each frame make its edge frame, µs
            (default 50 ms, one DSEC label interval). At most ``frame_interval_us``.
        event_substeps: Rendered intensity frames per event window (the simulator interpolates
            linearly between them); more is smoother and slower.
        night_probability: Chance that a sequence is at night.
        modalities: Modality folders to write (labels are always written).
        scenes: ``"street"``: one straight street from nearly one camera pose, lit by day or night,
            with fixed sensor settings (the default; its files are unchanged since before
            ``scenes`` existed). ``"varied"``: every sequence draws a street, junction or open
            area, its camera pose, road shape, objects, time of day and sensor settings from the
            ranges of :mod:`madm_ros.synthetic.variety`, so the label layout alone predicts little;
            ``meta.json`` then lists what each sequence drew (``generator.sequences``).
    """

    frames: int = 200
    height: int = 256
    width: int = 512
    seed: int = 0
    frames_per_sequence: int = 10
    frame_interval_us: int = 200_000
    event_window_us: int = 50_000
    event_substeps: int = 4
    night_probability: float = 0.2
    modalities: tuple[str, ...] = MODALITIES
    scenes: str = "street"

    def __post_init__(self) -> None:
        def integer(name: str, low: int, high: int) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
                raise ConfigError(f"SynthConfig.{name} must be an integer in {low}..{high}, got {value!r}")

        integer("frames", 1, 10_000_000)
        integer("height", 16, 4096)
        integer("width", 16, 4096)
        integer("seed", 0, 2**63 - 1)
        integer("frames_per_sequence", 1, 100_000)
        integer("frame_interval_us", 1000, 60_000_000)
        integer("event_window_us", 1000, self.frame_interval_us if isinstance(self.frame_interval_us, int) else 0)
        integer("event_substeps", 1, 100)
        if self.sequences > 1000:
            raise ConfigError(
                f"{self.frames} frames at {self.frames_per_sequence} per sequence make {self.sequences} sequences; "
                "at most 1000 fit the s<3 digits> names: raise frames_per_sequence"
            )
        if not (isinstance(self.night_probability, (int, float)) and 0 <= self.night_probability <= 1):
            raise ConfigError(f"SynthConfig.night_probability must be in [0, 1], got {self.night_probability!r}")
        modalities = tuple(self.modalities)
        unknown = [m for m in modalities if m not in MODALITY_ENCODINGS]
        if unknown or not modalities or len(set(modalities)) != len(modalities):
            raise ConfigError(
                f"SynthConfig.modalities must be distinct names from {', '.join(MODALITY_ENCODINGS)}, "
                f"got {list(modalities)}"
            )
        object.__setattr__(self, "modalities", modalities)
        if self.scenes not in SCENE_SETS:
            raise ConfigError(f"SynthConfig.scenes must be one of {', '.join(SCENE_SETS)}, got {self.scenes!r}")

    @property
    def sequences(self) -> int:
        """Number of sequences (streets)."""
        return math.ceil(self.frames / self.frames_per_sequence)

    def camera(self) -> Camera:
        """Intrinsics shared by all modalities."""
        return Camera.from_fov(self.width, self.height, HFOV_DEG)

    def edge_frame_config(self) -> EdgeFrameConfig:
        """How the event windows are accumulated (recorded in ``meta.json``)."""
        return EdgeFrameConfig(
            width=self.width, height=self.height, window_us=self.event_window_us, polarity="ignore", contribution=0.25
        )


def sequence_length(config: SynthConfig, seq: int) -> int:
    """Frames in sequence ``seq`` (all but the last have ``frames_per_sequence``)."""
    return min(config.frames_per_sequence, config.frames - seq * config.frames_per_sequence)


def frame_time_us(config: SynthConfig, frame: int) -> int:
    """Stamp of frame ``frame`` of a sequence, µs on the sequence clock (the first event window starts at 0)."""
    return config.event_window_us + frame * config.frame_interval_us


def sequence_scene(config: SynthConfig, seq: int) -> Scene:
    """The scene of sequence ``seq`` (depends only on the seed, the index, ``night_probability`` and ``scenes``)."""
    duration = frame_time_us(config, sequence_length(config, seq) - 1) * 1e-6
    make = make_scene if config.scenes == "street" else make_varied_scene
    return make(np.random.default_rng([config.seed, seq, 0]), duration, config.night_probability)


def sequence_sensors(config: SynthConfig, seq: int) -> SensorProfile:
    """The sensor settings of sequence ``seq``: fixed for ``"street"``, drawn per sequence for ``"varied"``."""
    if config.scenes == "street":
        return DEFAULT_SENSORS
    return random_sensors(np.random.default_rng([config.seed, seq, 5]))


def sequence_record(config: SynthConfig, seq: int) -> dict[str, Any]:
    """What a varied sequence drew (scene kind, camera pose, road, light, sensors), as written to ``meta.json``."""
    return {"sequence": seq, **describe(sequence_scene(config, seq), sequence_sensors(config, seq))}


@dataclass
class RenderedFrame:
    """One rendered frame of a sequence: what ``synth`` writes, plus the raw events of its window.

    Attributes:
        name: File stem (``frame_name``).
        stamp_us: Frame time on the sequence clock, µs.
        label: uint8 label image (``LABELS_DIR``).
        images: Modality → the image written to that modality's folder.
        events: The simulated events of the window before ``stamp_us`` (``None`` without events).
    """

    name: str
    stamp_us: int
    label: np.ndarray
    images: dict[str, np.ndarray]
    events: Events | None


def render_sequence(config: SynthConfig, seq: int) -> Iterator[RenderedFrame]:
    """Render the frames of sequence ``seq`` in order (the event camera's state carries over between frames)."""
    n = sequence_length(config, seq)
    window, substeps = config.event_window_us, config.event_substeps
    scene = sequence_scene(config, seq)
    sensors = sequence_sensors(config, seq)
    camera = config.camera()
    rays = camera.rays()
    thermal_camera = ThermalCamera.random(config.height, config.width, np.random.default_rng([config.seed, seq, 2]))
    wants = set(config.modalities)
    events = None
    if "events" in wants:
        sim_seed = int(np.random.default_rng([config.seed, seq, 4]).integers(2**31))
        events = EventCamera(config.height, config.width, sim_seed, scene.lighting.night, sensors)
        edge_config = config.edge_frame_config()
    last_step: int | None = None
    for k in range(n):
        rng = np.random.default_rng([config.seed, seq, 1, k])
        stamp = frame_time_us(config, k)
        g = render(scene, camera, rays, stamp * 1e-6)
        radiance = shade(g, scene)
        images: dict[str, np.ndarray] = {}
        if "rgb" in wants:
            images["rgb"] = rgb_image(radiance, scene, rng, sensors)
        if "depth" in wants:
            images["depth"] = depth_image(g, camera, rng, sensors)
        if "thermal" in wants:
            images["thermal"] = thermal_image(g, scene, thermal_camera, rng, sensors)
        window_events = None
        if events is not None:
            start = stamp - window
            if last_step != start:  # (re)sync the pixels' reference levels at the window start
                lum = intensity(shade(render(scene, camera, rays, start * 1e-6), scene), scene)
                events.step(lum, start, rng)
            parts = []
            for j in range(1, substeps + 1):
                t = start + window * j // substeps
                view = radiance if j == substeps else shade(render(scene, camera, rays, t * 1e-6), scene)
                parts.append(events.step(intensity(view, scene), t, rng))
            parts.append(events.noise(start, stamp, rng))
            window_events = Events.concatenate(parts)
            window_events = window_events[np.argsort(window_events.t, kind="stable")]
            images["events"] = accumulate(window_events, edge_config)
            last_step = stamp
        yield RenderedFrame(frame_name(seq, k), stamp, g.label, images, window_events)


def _sequence(
    config: SynthConfig, seq: int, out_dir: Path, on_frame: Callable[[], None] | None = None
) -> list[tuple[str, int]]:
    """Render and write the frames of sequence ``seq``; returns their names and stamps (µs)."""
    written = []
    for frame in render_sequence(config, seq):
        write_image(out_dir, LABELS_DIR, frame.name, frame.label)
        for modality, image in frame.images.items():
            write_image(out_dir, modality, frame.name, image)
        written.append((frame.name, frame.stamp_us))
        if on_frame is not None:
            on_frame()
    return written


def _prepare(out_dir: Path, overwrite: bool) -> None:
    """Refuse a foreign non-empty folder (unless ``overwrite``); clear an earlier synth output's files."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir} exists and is not a folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    entries = list(out_dir.iterdir())
    ours = (out_dir / _IN_PROGRESS).exists()
    if not ours and (out_dir / META_FILE).is_file():
        try:
            ours = (FolderMeta.read(out_dir).generator or {}).get("name") == GENERATOR_NAME
        except MadmError:  # unreadable or foreign meta.json
            ours = False
    if entries and not ours and not overwrite:
        raise ConfigError(
            f"output folder {out_dir} is not empty and holds no earlier synth output; "
            "choose an empty or new folder, or pass --overwrite"
        )
    (out_dir / _IN_PROGRESS).write_text("python -m madm_train synth is writing this folder\n")
    (out_dir / META_FILE).unlink(missing_ok=True)
    for sub in (*MODALITY_ENCODINGS, LABELS_DIR):
        folder = out_dir / sub
        if folder.is_dir():
            for path in folder.iterdir():
                if _OUR_FILE.match(path.name) and path.is_file():
                    path.unlink()


def _meta(config: SynthConfig, frames: list[tuple[str, int]]) -> FolderMeta:
    camera = config.camera()
    edge = config.edge_frame_config()
    generator = {
        "name": GENERATOR_NAME,
        "config": dataclasses.asdict(config),
        "hfov_deg": HFOV_DEG,
        "event_simulator": dict(EVENT_SIMULATOR),
        "event_background_hz": list(BACKGROUND_HZ),
    }
    if config.scenes == "street":  # the field postdates street folders, whose meta.json must not change
        del generator["config"]["scenes"]
    else:
        generator["sequences"] = [sequence_record(config, seq) for seq in range(config.sequences)]
    notes = {
        "rgb": "uint8 sRGB from a linear-radiance renderer: textures, sun/sky lighting, exposure, vignetting, noise",
        "depth": f"uint16 z-depth in millimetres, 0 = no measurement (beyond {DEPTH_MAX_M:g} m, sky, occlusion "
        "edges, glass, dropouts); stereo-like noise sigma = 5 mm + z^2 * 0.25 px / (fx * 0.5 m)",
        "thermal": "uint16 apparent temperature in centi-Kelvin (kelvin = counts / 100, 29315 = 20 C), with "
        "optics blur, vignetting, fixed-pattern noise and NETD",
        "events": f"edge frame of the events in the {config.event_window_us} us before the frame stamp "
        "(madm_ros.events.simulator on the rendered luminance, plus background activity and hot pixels), "
        "accumulated with the 'events' config",
    }
    if config.scenes != "street":
        notes = {m: f"{note}; sensor settings differ per sequence (generator.sequences)" for m, note in notes.items()}
    return FolderMeta(
        frames=tuple(name for name, _ in frames),
        stamps_us=tuple(stamp for _, stamp in frames),
        modalities={m: MODALITY_ENCODINGS[m] for m in config.modalities},
        has_labels=True,
        label_set=DSEC_11.name,
        class_names=DSEC_11.class_names,
        notes={m: notes[m] for m in config.modalities},
        events={f.name: getattr(edge, f.name) for f in dataclasses.fields(edge) if f.init and f.name != "rectify_map"}
        if "events" in config.modalities
        else None,
        camera={
            "fx": camera.fx,
            "fy": camera.fy,
            "cx": camera.cx,
            "cy": camera.cy,
            "width": camera.width,
            "height": camera.height,
        },
        generator=generator,
    )


def generate(
    config: SynthConfig, out_dir: Path | str, *, overwrite: bool = False, workers: int = 1, progress: bool = False
) -> Path:
    """Write ``config.frames`` synthetic frames into ``out_dir`` in the generic folder layout.

    Args:
        config: What to generate.
        out_dir: Output folder: new, empty, or an earlier synth output (whose frames are replaced).
        overwrite: Also write into a non-empty folder that is no synth output (files of other
            names are left alone).
        workers: Processes rendering sequences in parallel; the files do not depend on it.
        progress: Show a tqdm progress bar on stderr.

    Returns:
        The folder, complete with ``meta.json``.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers must be a positive integer, got {workers!r}")
    out_dir = Path(out_dir)
    _prepare(out_dir, overwrite)
    from tqdm import tqdm

    bar = tqdm(total=config.frames, unit="frame", disable=not progress, desc="synth")
    frames: list[tuple[str, int]] = []
    if workers == 1 or config.sequences == 1:
        for seq in range(config.sequences):
            frames += _sequence(config, seq, out_dir, on_frame=lambda: bar.update(1))
    else:
        with ProcessPoolExecutor(min(workers, config.sequences), mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(_sequence, config, seq, out_dir) for seq in range(config.sequences)]
            for future in futures:
                part = future.result()
                bar.update(len(part))
                frames += part
    bar.close()
    _meta(config, frames).write(out_dir)
    (out_dir / _IN_PROGRESS).unlink(missing_ok=True)
    return out_dir


def generate_once(config: SynthConfig, out_dir: Path | str, *, workers: int = 1, progress: bool = False,
                  otherwise: str = "delete it or choose another folder") -> Path:
    """:func:`generate` unless ``out_dir`` already holds a finished output of exactly ``config``, which is reused.

    Why: a thousand frames take minutes, and the benchmark and ``scripts/make-default-models``
    come back to their folders many times; a folder of *other* settings is refused rather than
    reused, so that two data sets are never mixed up. ``otherwise`` ends that error: what to do.
    """
    import json
    import sys

    out_dir = Path(out_dir)
    if not (out_dir / "meta.json").exists():  # written last: a folder without it is not a finished output
        if progress:
            print(f"synth: generating {config.frames} {config.scenes} frames of {config.height}x{config.width} "
                  f"(seed {config.seed}) in {out_dir}", file=sys.stderr, flush=True)
        return generate(config, out_dir, workers=workers, progress=progress)
    recorded = {"scenes": "street", **(FolderMeta.read(out_dir).generator or {}).get("config", {})}  # older: street
    if recorded != json.loads(json.dumps(dataclasses.asdict(config))):
        raise ConfigError(f"{out_dir} holds synthetic data of other settings ({recorded}); {otherwise}")
    return out_dir
