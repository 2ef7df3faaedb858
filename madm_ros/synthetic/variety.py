"""Varied scenes (``SynthConfig(scenes="varied")``): layouts that a model cannot score by position alone.

The ``"street"`` scenes of :func:`~madm_ros.synthetic.scene.make_scene` are one straight street
seen from nearly the same pose, so predicting "sky on top, road at the bottom" already scores
well. Here every sequence draws its own layout, camera pose, light and sensors, each from a
stated range (uniform unless said otherwise):

=========================  ===================================================================
scene kind                 ``street`` 40 %, ``junction`` 30 % (a crossing road ahead, cross
                           traffic, pedestrians on its crosswalks), ``open`` 30 % (no façades:
                           grass, tree lines, scattered trees and bushes, more sky)
camera height              0.8–3.2 m (robot to bus roof)
camera pitch, roll, yaw    pitch −10°..+8° (+ looks up), roll −8°..+8°, yaw against the road
                           −12°..+12°: the horizon moves up and down and tilts
camera place and speed     on its side of the road (left- or right-hand traffic 30/70 %), 15–90 %
                           of the driving lanes' half width off the centre; standing 15 %, else
                           3–16 m/s
road                       half width 2.5–10 m (parking lanes along both curbs above 5 m),
                           sidewalks 1–5 m (open: 0.5–2 m); street and open roads curve with
                           50 %: curvature ±1/600..1/90 per metre around the camera's path
junction                   crossing road 15–60 m beyond the camera's last position, half width
                           3–7 m, sidewalks 1.5–4 m, façades along it
objects                    per sequence and class (traffic, parked cars, pedestrians, street
                           lights, signs, trees) none with 20 %, else 0.3–3 × the street's
                           density; parked rows fill 50–100 % of their slots;
                           children 15 % of pedestrians (0.55–0.75 × size); trees 0.6–1.7 ×
                           size; 0–5 pedestrians crossing the road ahead of the camera
lighting                   night with ``night_probability``; otherwise dusk 30 % (sun −4°..8°,
                           warm and dim, orange horizon) or day (sun 8°..75°, brightness
                           0.6–1.5, clouds 0–100 %); air 263–308 K; exposure varies so images
                           are not all equally bright
sensors                    see :func:`random_sensors`
=========================  ===================================================================

Labels stay exact in every modality: all of this changes the scene, and every modality and the
label are still rendered from the same G-buffer.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from madm_ros.synthetic.scene import (  # the street's object and façade builders: varied scenes reuse them
    VEGETATION,
    Bend,
    CameraPath,
    Junction,
    Lighting,
    Material,
    Part,
    Scene,
    Strip,
    Thing,
    barrier_strip,
    facade_strip,
    make_car,
    make_person,
    make_pole,
    make_thing,
    make_tree,
    pick_color,
    strip_from_rows,
)
from madm_ros.synthetic.sensors import SensorProfile

__all__ = ["SCENE_KINDS", "describe", "make_varied_scene", "random_sensors"]

SCENE_KINDS = ("street", "junction", "open")
"""Layouts a varied sequence draws from (``Scene.kind``)."""
_KIND_WEIGHTS = (0.4, 0.3, 0.3)
_DENSITY_CLASSES = ("traffic", "parked", "pedestrians", "lights", "signs", "trees")
_FOLIAGE_COLORS = np.array([(0.09, 0.18, 0.05), (0.14, 0.2, 0.07), (0.10, 0.20, 0.05), (0.16, 0.22, 0.06)])


@dataclass(frozen=True)
class _Layout:
    """The road of one varied sequence, shared by the builders of strips and things."""

    kind: str
    road_half: float
    sidewalk: float
    verge: tuple[float, float]
    parking: bool
    hand: int  # +1: traffic drives on the right, the camera too
    z_min: float
    z_max: float
    z_end: float  # the camera's z at the last frame
    junction: Junction | None
    density: dict[str, float]

    @property
    def curb(self) -> float:
        """Lateral distance of the back of the sidewalks."""
        return self.road_half + self.sidewalk

    @property
    def drive_half(self) -> float:
        """Half width of the driving lanes (inside the parking lanes)."""
        return self.road_half - 2.3 if self.parking else self.road_half

    def facade_x(self, side: int) -> float:
        """Lateral place of the near façades on ``side`` (−1 left, +1 right)."""
        return side * (self.curb + self.verge[(side + 1) // 2] + 0.3)

    def clear(self, z: float, margin: float = 1.0) -> bool:
        """Whether ``z`` is off the crossing road and its sidewalks (things along the main road stop there)."""
        j = self.junction
        return j is None or abs(z - j.z) > j.road_half + j.sidewalk + margin


def make_varied_scene(rng: np.random.Generator, duration_s: float, night_probability: float) -> Scene:
    """A random scene of any :data:`SCENE_KINDS` for a sequence of ``duration_s`` seconds (ranges: module doc)."""
    kind = str(rng.choice(SCENE_KINDS, p=_KIND_WEIGHTS))
    lighting = _varied_lighting(rng, night_probability)
    speed = 0.0 if rng.random() < 0.15 else float(rng.uniform(3.0, 16.0))
    layout = _layout(rng, kind, speed * duration_s)
    bend = None
    if kind != "junction" and rng.random() < 0.5:
        curvature = rng.choice([-1, 1]) * rng.uniform(1 / 600, 1 / 90)
        bend = Bend(float(curvature), float(layout.z_end / 2 + rng.uniform(-10, 40)))
    camera = _camera(rng, layout, speed, bend)
    things = _things(rng, layout, camera, lighting.air_k)
    if bend is not None:
        things = [dataclasses.replace(thing, bend=bend) for thing in things]
    grass = 0.85 if kind == "open" else 0.6
    return Scene(
        road_half=layout.road_half,
        sidewalk=layout.sidewalk,
        verge_grass=(bool(rng.random() < grass), bool(rng.random() < grass)),
        centre_line=bool(layout.road_half > 4.0 and rng.random() < 0.8),
        crosswalk_z=float(rng.uniform(15, 60)) if kind != "junction" and rng.random() < 0.4 else None,
        asphalt_rgb=pick_color(rng, np.array([(0.07, 0.07, 0.075), (0.14, 0.135, 0.13), (0.22, 0.22, 0.21)]), 0.08),
        paving_rgb=pick_color(rng, np.array([(0.35, 0.33, 0.3), (0.45, 0.42, 0.4), (0.3, 0.22, 0.2)]), 0.1),
        grass_rgb=pick_color(rng, np.array([(0.12, 0.2, 0.05), (0.2, 0.22, 0.08), (0.25, 0.22, 0.1)]), 0.12),
        strips=tuple(_strips(rng, layout)),
        things=tuple(things),
        lighting=lighting,
        camera=camera,
        texture_seed=int(rng.integers(2**31)),
        kind=kind,
        bend=bend,
        junction=layout.junction,
    )


def random_sensors(rng: np.random.Generator) -> SensorProfile:
    """Sensor settings of one varied sequence, each within a range real sensors of the kind span.

    RGB noise 0.5–3 × the street camera's; depth range 20–100 m, disparity noise 0.1–0.6 px, edge
    dropout 30–90 %, dropout-blob level 0.8–0.97; thermal gain 0.85–1.15 around 20 °C and offset
    −3..3 K; event contrast threshold 0.2–0.4 (lower thresholds drown dark scenes in shot-noise events),
    background activity 0.5–2 × the street's.
    """
    return SensorProfile(
        rgb_noise=float(rng.uniform(0.5, 3.0)),
        depth_max_m=float(rng.uniform(20.0, 100.0)),
        depth_disparity_px=float(rng.uniform(0.1, 0.6)),
        depth_edge_dropout=float(rng.uniform(0.3, 0.9)),
        depth_blob_level=float(rng.uniform(0.8, 0.97)),
        thermal_gain=float(rng.uniform(0.85, 1.15)),
        thermal_offset_k=float(rng.uniform(-3.0, 3.0)),
        event_threshold=float(rng.uniform(0.2, 0.4)),
        event_background=float(rng.uniform(0.5, 2.0)),
    )


def describe(scene: Scene, sensors: SensorProfile) -> dict[str, Any]:
    """What a varied sequence drew, for ``meta.json`` (``generator.sequences``): kind, pose, road, light, sensors."""
    camera, light = scene.camera, scene.lighting
    elevation = math.degrees(math.asin(max(-1.0, min(1.0, light.sun_dir[1]))))
    counts: dict[str, int] = {}
    for thing in scene.things:
        counts[thing.kind] = counts.get(thing.kind, 0) + 1
    return {
        "scene": scene.kind,
        "camera_height_m": round(camera.height, 3),
        "camera_pitch_deg": round(math.degrees(camera.pitch0), 2),
        "camera_roll_deg": round(math.degrees(camera.roll0), 2),
        "camera_yaw_deg": round(math.degrees(camera.yaw0), 2),
        "camera_speed_mps": round(camera.speed, 2),
        "road_half_m": round(scene.road_half, 2),
        "sidewalk_m": round(scene.sidewalk, 2),
        "curvature_per_m": round(scene.bend.curvature, 5) if scene.bend else 0.0,
        "junction_z_m": round(scene.junction.z, 1) if scene.junction else None,
        "time_of_day": "night" if light.night else "dusk" if elevation < 8 else "day",
        "sun_elevation_deg": round(elevation, 1),
        "air_temperature_k": round(light.air_k, 2),
        "objects": dict(sorted(counts.items())),
        "sensors": dataclasses.asdict(sensors),
    }


# -- layout and camera ------------------------------------------------------------------------------


def _layout(rng: np.random.Generator, kind: str, travel_m: float) -> _Layout:
    road_half = float(rng.uniform(2.5, 10.0))
    sidewalk = float(rng.uniform(0.5, 2.0) if kind == "open" else rng.uniform(1.0, 5.0))
    junction = None
    if kind == "junction":
        junction = Junction(
            z=float(travel_m + rng.uniform(15, 60)),
            road_half=float(rng.uniform(3.0, 7.0)),
            sidewalk=float(rng.uniform(1.5, 4.0)),
        )
    density = {name: 0.0 if rng.random() < 0.2 else float(rng.uniform(0.3, 3.0)) for name in _DENSITY_CLASSES}
    return _Layout(
        kind=kind,
        road_half=road_half,
        sidewalk=sidewalk,
        verge=(_verge(rng), _verge(rng)),
        parking=road_half > 5.0,
        hand=1 if rng.random() < 0.7 else -1,
        z_min=-30.0,
        z_max=travel_m + 160.0,
        z_end=travel_m,
        junction=junction,
        density=density,
    )


def _verge(rng: np.random.Generator) -> float:
    """Width of the strip between a sidewalk and the façades: none with 40 %, else up to 8 m."""
    return float(rng.uniform(0, 8)) if rng.random() < 0.6 else 0.0


def _camera(rng: np.random.Generator, layout: _Layout, speed: float, bend: Bend | None) -> CameraPath:
    return CameraPath(
        x0=layout.hand * rng.uniform(0.15, 0.9) * layout.drive_half,
        height=rng.uniform(0.8, 3.2),
        speed=speed,
        sway=rng.uniform(0, 0.25) if speed else 0.0,
        sway_hz=rng.uniform(0.05, 0.3),
        yaw0=np.radians(rng.uniform(-12, 12)),
        yaw_amp=np.radians(rng.uniform(0, 4)) if speed else 0.0,
        yaw_hz=rng.uniform(0.05, 0.25),
        pitch0=np.radians(rng.uniform(-10, 8)),
        jitter=np.radians(rng.uniform(0.1, 0.6) if speed else rng.uniform(0, 0.1)),
        phases=tuple(float(v) for v in rng.uniform(0, 2 * np.pi, 4)),  # type: ignore[arg-type]
        roll0=np.radians(rng.uniform(-8, 8)),
        bend=bend,
    )


def _varied_lighting(rng: np.random.Generator, night_probability: float) -> Lighting:
    """Night, dusk or day light with its sky, exposure and thermal boundary conditions."""
    night = bool(rng.random() < night_probability)
    dusk = not night and rng.random() < 0.3
    clouds = float(rng.uniform(0, 1.0))
    elevation = np.radians(rng.uniform(-30, -8) if night else rng.uniform(-4, 8) if dusk else rng.uniform(8, 75))
    azimuth = rng.uniform(0, 2 * np.pi)
    sun_dir = (np.cos(elevation) * np.sin(azimuth), np.sin(elevation), np.cos(elevation) * np.cos(azimuth))
    air = float(rng.uniform(263.0, 300.0) if night or dusk else rng.uniform(268.0, 308.0))
    if night:
        level = rng.uniform(0.4, 2.0)  # moonlight, street lighting and sky glow
        sun = np.zeros(3)
        ambient = np.array([0.018, 0.02, 0.03]) * level
        horizon, zenith = np.array([0.03, 0.03, 0.045]) * level, np.array([0.005, 0.006, 0.012]) * level
        exposure = rng.uniform(2.0, 6.0)
    elif dusk:
        level = rng.uniform(0.3, 0.8) * (1 - 0.6 * clouds)
        sun = np.array([1.0, 0.55, 0.25]) * level * max(0.0, np.sin(elevation) * 4 + 0.2) * (elevation > 0)
        ambient = np.array([0.10, 0.10, 0.14]) * rng.uniform(0.6, 1.3)
        horizon = np.array([0.85, 0.45, 0.22]) * rng.uniform(0.4, 0.9)
        zenith = np.array([0.06, 0.09, 0.25]) * rng.uniform(0.6, 1.2) * (1 - clouds) + 0.15 * clouds
        exposure = rng.uniform(1.2, 3.0)
    else:
        brightness = rng.uniform(0.6, 1.5)
        warm = rng.uniform(0, 0.25) * (1 - np.sin(elevation))
        sun = np.array([1.0, 0.95 - 0.5 * warm, 0.88 - warm]) * brightness * (1 - 0.8 * clouds)
        ambient = np.array([0.30, 0.34, 0.42]) * rng.uniform(0.6, 1.3) * (1 + 0.5 * clouds)
        horizon = np.array([0.75, 0.80, 0.88]) * rng.uniform(0.7, 1.2)
        zenith = np.array([0.20, 0.35, 0.75]) * rng.uniform(0.6, 1.2) * (1 - clouds) + 0.6 * clouds
        exposure = rng.uniform(0.45, 1.4)
    return Lighting(
        night=night,
        sun_dir=tuple(float(v) for v in sun_dir),  # type: ignore[arg-type]
        sun_rgb=tuple(float(v) for v in sun),  # type: ignore[arg-type]
        ambient_rgb=tuple(float(v) for v in ambient),  # type: ignore[arg-type]
        horizon_rgb=tuple(float(v) for v in horizon),  # type: ignore[arg-type]
        zenith_rgb=tuple(float(v) for v in zenith),  # type: ignore[arg-type]
        clouds=clouds,
        exposure=float(exposure),
        air_k=air,
        sky_k=float(air - rng.uniform(20, 50) * (1 - 0.7 * clouds)),
        sun_heating=0.0 if night else float((1 - 0.8 * clouds) * max(0.0, np.sin(elevation)) ** 0.5),
    )


# -- strips -----------------------------------------------------------------------------------------


def _strips(rng: np.random.Generator, layout: _Layout) -> list[Strip]:
    """Façades (none in open scenes), tree lines, walls and fences along the road, and along a crossing road."""
    strips = []
    for side in (-1, 1):
        facade_x = layout.facade_x(side)
        if layout.kind != "open" and rng.random() < 0.85:
            strips.append(facade_strip(rng, facade_x, layout.z_min, layout.z_max, far=False))
        if layout.kind != "open" or rng.random() < 0.6:
            far_x = side * (abs(facade_x) + rng.uniform(10, 60 if layout.kind == "open" else 25))
            maker = _tree_line if layout.kind == "open" else facade_strip
            strips.append(maker(rng, far_x, layout.z_min, layout.z_max, far=True))
        if rng.random() < 0.7:
            forced = str(rng.choice(["wall", "fence"]))
            strips.append(barrier_strip(rng, side * (layout.curb + 0.05), layout.z_min, layout.z_max, forced, 20.0))
    j = layout.junction
    if j is None:
        return strips
    reach = j.road_half + j.sidewalk
    strips = [_cut(strip, j.z - reach, j.z + reach) for strip in strips]
    for end in (-1, 1):  # façades along the crossing road, outside the main road's façade lines
        face_z = j.z + end * (reach + rng.uniform(0, 3))
        row = facade_strip(rng, face_z, -140.0, 140.0, far=False)
        row = _cut(row, layout.facade_x(-1), layout.facade_x(1))
        strips.append(dataclasses.replace(row, axis="z", facing=j.z))
    return strips


def _tree_line(rng: np.random.Generator, x: float, z_min: float, z_max: float, far: bool) -> Strip:
    """A row of woodland seen from afar: vegetation 5–15 m high with clearings (``far`` as :func:`facade_strip`)."""
    rows, z = [], z_min
    while z < z_max:
        length = rng.uniform(15, 60) if far else rng.uniform(5, 20)
        if rng.random() < 0.6:
            rows.append(
                dict(
                    z0=z,
                    z1=z + length,
                    height=rng.uniform(5, 15),
                    label=VEGETATION,
                    material=Material.FOLIAGE,
                    color=pick_color(rng, _FOLIAGE_COLORS, 0.15),
                    heat=rng.normal(0, 1.0),
                )
            )
        z += length + rng.uniform(0, 20)
    return strip_from_rows(x, rows)


def _cut(strip: Strip, lo: float, hi: float) -> Strip:
    """The strip without its part between ``lo`` and ``hi`` along it (where a crossing road passes)."""
    before, after = np.flatnonzero(strip.z0 < lo), np.flatnonzero(strip.z1 > hi)
    index = np.concatenate([before, after])
    per_segment = {
        f.name: getattr(strip, f.name)[index]
        for f in dataclasses.fields(strip)
        if isinstance(getattr(strip, f.name), np.ndarray)
    }
    per_segment["z0"] = np.concatenate([strip.z0[before], np.maximum(strip.z0[after], hi)]).astype(np.float32)
    per_segment["z1"] = np.concatenate([np.minimum(strip.z1[before], lo), strip.z1[after]]).astype(np.float32)
    return dataclasses.replace(strip, **per_segment)


# -- things -----------------------------------------------------------------------------------------


def _row(rng: np.random.Generator, z_min: float, z_max: float, spacing: tuple[float, float], density: float) -> list[float]:
    """Places along the road at random gaps (``spacing`` divided by ``density``); none at density 0."""
    if density <= 0:
        return []
    out, z = [], z_min + rng.uniform(0, spacing[1]) / density
    while z < z_max:
        out.append(float(z))
        z += rng.uniform(*spacing) / density
    return out


def _things(rng: np.random.Generator, layout: _Layout, camera: CameraPath, air_k: float) -> list[Thing]:
    things = []
    for side in (-1, 1):
        things += _roadside(rng, layout, side, air_k)
    things += _traffic(rng, layout, camera)
    things += _crossing(rng, layout, air_k)
    return things


def _roadside(rng: np.random.Generator, layout: _Layout, side: int, air_k: float) -> list[Thing]:
    """Street lights, signs, trees, bushes, pedestrians and parked cars on one side of the main road."""
    d, lo, hi = layout.density, layout.z_min, layout.z_max
    rh, sw, verge = layout.road_half, layout.sidewalk, layout.verge[(side + 1) // 2]
    things = []
    for z in _row(rng, lo, hi, (12, 28), d["lights"]):
        things.append(make_pole(rng, side * (rh + rng.uniform(0.3, max(0.4, min(sw, 1.5)))), z, side, False))
    for z in _row(rng, lo, hi, (14, 35), d["signs"]):
        things.append(make_pole(rng, side * (rh + rng.uniform(0.3, max(0.4, sw - 0.2))), z, side, True))
    wide = 40.0 if layout.kind == "open" else max(verge, 0.0)
    for z in _row(rng, lo, hi, (6, 16), d["trees"]):
        x = side * (layout.curb + rng.uniform(0.5, wide - 0.3) if wide > 2 else rh + sw * 0.8)
        things.append(_scaled(make_tree(rng, x, z), rng.uniform(0.6, 1.7)))
    if layout.kind == "open" or verge > 1.5:
        for z in _row(rng, lo, hi, (6, 24), d["trees"]):
            things.append(_bush(rng, side * (layout.curb + rng.uniform(0.6, max(1.0, wide - 0.4))), z))
    for z in _row(rng, lo, hi, (3, 11), d["pedestrians"]):
        vz = rng.choice([-1, 1]) * rng.uniform(0.6, 1.8) if rng.random() < 0.75 else 0.0
        person = make_person(rng, side * (rh + rng.uniform(0.3, max(0.4, sw - 0.3))), z, vz, air_k)
        things.append(_scaled(person, rng.uniform(0.55, 0.75)) if rng.random() < 0.15 else person)
    if layout.parking and d["parked"] > 0:
        fill = rng.uniform(0.5, 1.0)
        for z in _row(rng, lo, hi, (5.5, 7.5), 1.0):
            if rng.random() < fill:
                heading = side * layout.hand if rng.random() < 0.8 else -side * layout.hand
                things.append(make_car(rng, side * (rh - 1.15), z, 0.0, heading, moving=False))
    return [thing for thing in things if layout.clear(thing.z)]


def _traffic(rng: np.random.Generator, layout: _Layout, camera: CameraPath) -> list[Thing]:
    """Cars in the lanes: with the camera on its side of the road, oncoming on the other; cross traffic at a junction."""
    things = []
    density = layout.density["traffic"]
    n_lanes = max(1, int(layout.drive_half // 3.0))
    lane_w = layout.drive_half / n_lanes
    ahead = max(camera.speed, 3.0)
    for lane in range(n_lanes):
        for side in (-1, 1):
            x = side * (lane + 0.5) * lane_w
            with_camera = side == layout.hand
            for z in _row(rng, rng.uniform(12, 30), layout.z_max, (10, 35), density):
                if with_camera:  # never caught up by the camera, and clear of it
                    vz = ahead * rng.uniform(1.0, 1.2)
                    z += 6 if abs(x - camera.x0) < lane_w * 0.7 else 0
                else:
                    vz = -rng.uniform(5, 14)
                things.append(make_car(rng, x, z, vz, 1 if vz > 0 else -1, moving=True))
    j = layout.junction
    if j is not None and density > 0:
        for _ in range(rng.integers(0, 5)):
            direction = int(rng.choice([-1, 1]))
            z = j.z - direction * layout.hand * j.road_half * rng.uniform(0.25, 0.75)  # its own side of the road
            car = make_car(rng, 0.0, 0.0, 0.0, 1, moving=True)
            things.append(_across(car, float(rng.uniform(-60, 60)), z, direction * rng.uniform(4, 12)))
    return things


def _crossing(rng: np.random.Generator, layout: _Layout, air_k: float) -> list[Thing]:
    """Pedestrians walking across the road, ahead of the camera's last position (on the crosswalks at a junction)."""
    things = []
    j = layout.junction
    for _ in range(rng.integers(0, 6) if layout.density["pedestrians"] > 0 else 0):
        if j is not None:
            z = j.z + rng.choice([-1, 1]) * (j.road_half + 2.5) + rng.uniform(-1.5, 1.5)
        else:
            z = layout.z_end + rng.uniform(8, 50)
        speed = rng.choice([-1, 1]) * rng.uniform(0.8, 1.6)
        person = make_person(rng, 0.0, 0.0, speed, air_k)
        things.append(_across(person, float(rng.uniform(-1, 1) * (layout.road_half + 1)), float(z), float(speed)))
    return things


def _across(thing: Thing, x: float, z: float, vx: float) -> Thing:
    """``thing`` (built facing along the road) turned to face and move across it, at ``(x, z)`` with speed ``vx``.

    The x and z extents of its parts swap, which for left-right symmetric cars and persons is the
    quarter turn; a car's lamps then face the way it drives when ``vx`` > 0 (its heading was +1).
    """
    parts = [
        dataclasses.replace(p, lo=(p.lo[2], p.lo[1], p.lo[0]), hi=(p.hi[2], p.hi[1], p.hi[0])) for p in thing.parts
    ]
    if vx < 0:  # mirror along x so the front leads
        parts = [dataclasses.replace(p, lo=(-p.hi[0], p.lo[1], p.lo[2]), hi=(-p.lo[0], p.hi[1], p.hi[2])) for p in parts]
    return make_thing(thing.kind, x, z, 0.0, parts, vx=vx, gait_hz=thing.gait_hz, gait_phase=thing.gait_phase)


def _scaled(thing: Thing, scale: float) -> Thing:
    """``thing`` scaled about its foot point (children, small and large trees)."""
    parts = [
        dataclasses.replace(
            p, lo=tuple(scale * v for v in p.lo), hi=tuple(scale * v for v in p.hi), swing=scale * p.swing
        )
        for p in thing.parts
    ]
    return make_thing(thing.kind, thing.x, thing.z, thing.vz, parts, gait_hz=thing.gait_hz, gait_phase=thing.gait_phase)


def _bush(rng: np.random.Generator, x: float, z: float) -> Thing:
    r = rng.uniform(0.4, 1.3)
    foliage = Part(
        "ellipsoid", (-r, -0.3 * r, -r * 1.3), (r, 1.4 * r, r * 1.3), VEGETATION, Material.FOLIAGE,
        pick_color(rng, _FOLIAGE_COLORS, 0.2),
    )
    return make_thing("bush", x, z, 0.0, [foliage])
