"""Sensor models: what an RGB camera, a depth sensor, a thermal camera and an event camera make of a G-buffer.

Each sensor sees only its own physics, so the modalities differ the way real ones do:

- **RGB** (:func:`rgb_image`): textures, colours, sun and sky lighting, exposure, vignetting,
  shot and read noise, a tone curve and sRGB gamma.
- **Depth** (:func:`depth_image`): geometry only. Stereo-like noise ``σ = 5 mm + z² σ_d / (f B)``
  (disparity noise ``σ_d`` = 0.25 px, baseline ``B`` = 0.5 m, ``f`` the focal length in pixels),
  no return beyond ``DEPTH_MAX_M`` or from the sky, holes along depth discontinuities (occlusion
  shadows, thin structures), on glass, and random dropout blobs.
- **Thermal** (:func:`thermal_image`): temperatures only. Per-material temperature relative to
  the air (solar heating of sunlit surfaces by day, stored heat in pavements at night), persons'
  skin near 33 °C and clothing between skin and air, hot engines and tyres of moving cars, a cold
  sky; apparent temperature from emissivity and reflected surroundings
  (``T⁴ = ε T_s⁴ + (1 − ε) T_env⁴``); optics blur, vignetting, fixed-pattern column and pixel
  offsets per sequence and temporal noise (NETD). Output in centi-Kelvin counts.
- **Events** (:class:`EventCamera`): moving edges only. Log-intensity contrast-threshold pixels
  (``madm_ros.events.simulator``) with threshold mismatch and refractory time, intensity-dependent
  shot noise, background activity and a few hot pixels.

The constants quoted above are the defaults of :class:`SensorProfile`, which ``"street"`` scenes
always use; ``"varied"`` scenes draw one profile per sequence (:mod:`madm_ros.synthetic.variety`).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from madm_ros.events.simulator import EventSimulator, EventSimulatorConfig
from madm_ros.events.types import Events
from madm_ros.folder_layout import DEPTH_MM_PER_M, THERMAL_COUNTS_PER_KELVIN
from madm_ros.synthetic.render import Camera, GBuffer, value_noise
from madm_ros.synthetic.scene import Material, Scene

__all__ = [
    "DEPTH_MAX_M", "EVENT_SIMULATOR", "EventCamera", "SensorProfile", "ThermalCamera", "depth_image", "intensity",
    "rgb_image",
]

DEPTH_MAX_M = 60.0
"""Farthest depth the simulated sensor reports; farther surfaces read 0 (no measurement)."""
_F32 = np.float32
_LUMA = np.array([0.2126, 0.7152, 0.0722], dtype=_F32)
EVENT_SIMULATOR = dict(c_on=0.25, c_off=0.25, sigma=0.04, refractory_us=200)
"""Pixel model of the synthetic event camera (``EventSimulatorConfig`` fields besides the seed)."""
BACKGROUND_HZ = (0.1, 0.5)
"""Background-activity rate per pixel in Hz, by day and at night."""


@dataclass(frozen=True)
class SensorProfile:
    """How strongly each sensor degrades its image; the defaults are the ``"street"`` sensors.

    Attributes:
        rgb_noise: Scale of the RGB shot and read noise.
        depth_max_m: Farthest depth reported; farther surfaces read 0.
        depth_disparity_px: Disparity noise of the stereo-like depth model, pixels.
        depth_edge_dropout: Chance that a pixel along a depth discontinuity has no measurement.
        depth_blob_level: Value-noise level above which dropout blobs remove depth (lower: more holes).
        thermal_gain: Radiometric gain of the thermal camera around 20 °C (1 = calibrated).
        thermal_offset_k: Radiometric offset of the thermal camera, kelvin.
        event_threshold: Contrast threshold of the event pixels (ON and OFF), log intensity.
        event_background: Scale of the background-activity rate (``BACKGROUND_HZ``).
    """

    rgb_noise: float = 1.0
    depth_max_m: float = DEPTH_MAX_M
    depth_disparity_px: float = 0.25
    depth_edge_dropout: float = 0.6
    depth_blob_level: float = 0.9
    thermal_gain: float = 1.0
    thermal_offset_k: float = 0.0
    event_threshold: float = EVENT_SIMULATOR["c_on"]
    event_background: float = 1.0


DEFAULT_SENSORS = SensorProfile()


def _vignette(height: int, width: int) -> np.ndarray:
    y = (np.arange(height, dtype=_F32) - (height - 1) / 2) / (height / 2)
    x = (np.arange(width, dtype=_F32) - (width - 1) / 2) / (width / 2)
    return (x[None, :] ** 2 * 0.75 + y[:, None] ** 2 * 0.25).astype(_F32)  # r² with a wide aspect


def rgb_image(
    radiance: np.ndarray, scene: Scene, rng: np.random.Generator, profile: SensorProfile = DEFAULT_SENSORS
) -> np.ndarray:
    """Linear radiance (H, W, 3) → uint8 RGB as a camera writes it."""
    light = scene.lighting
    h, w = radiance.shape[:2]
    x = radiance * _F32(light.exposure) * (1 - 0.3 * _vignette(h, w))[..., None]
    read = (0.01 if light.night else 0.003) * profile.rgb_noise
    shot = 0.004 * profile.rgb_noise**2
    x = x + np.sqrt(np.maximum(x, 0) * shot + read**2) * rng.standard_normal(x.shape, dtype=_F32)
    x = np.maximum(x, 0)
    x = x * (1 + x / 4) / (1 + x)  # soft shoulder instead of hard clipping
    srgb = np.power(np.minimum(x, 1), 1 / 2.2)
    return np.rint(srgb * 255).astype(np.uint8)


def intensity(radiance: np.ndarray, scene: Scene) -> np.ndarray:
    """Linear luminance the event pixels see (exposure-scaled, no clipping: DVS pixels are logarithmic)."""
    return (radiance @ _LUMA) * _F32(scene.lighting.exposure)


def depth_image(
    g: GBuffer, camera: Camera, rng: np.random.Generator, profile: SensorProfile = DEFAULT_SENSORS
) -> np.ndarray:
    """Z-depth → uint16 millimetres with noise and holes (0 = no measurement)."""
    z = g.depth
    finite = np.isfinite(z)
    valid = finite & (z <= profile.depth_max_m)
    zf = np.where(finite, z, 1e4).astype(_F32)
    sigma = 0.005 + zf * zf * _F32(profile.depth_disparity_px / (camera.fx * 0.5))
    noisy = zf + sigma * rng.standard_normal(z.shape, dtype=_F32)
    log_z = np.log(zf)
    jump = np.zeros(z.shape, dtype=bool)
    jump[:, 1:] |= np.abs(np.diff(log_z, axis=1)) > 0.06
    jump[:, :-1] |= np.abs(np.diff(log_z, axis=1)) > 0.06
    jump[1:] |= np.abs(np.diff(log_z, axis=0)) > 0.06
    jump[:-1] |= np.abs(np.diff(log_z, axis=0)) > 0.06
    edge = cv2.dilate(jump.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    holes = edge & (rng.random(z.shape, dtype=_F32) < profile.depth_edge_dropout)
    holes |= (g.material == Material.GLASS) & (rng.random(z.shape, dtype=_F32) < 0.5)
    holes |= (g.material == Material.METAL) & (rng.random(z.shape, dtype=_F32) < 0.15)
    rows, cols = np.mgrid[0 : z.shape[0], 0 : z.shape[1]].astype(_F32)
    offset = rng.uniform(0, 1000, 2)
    blobs = value_noise(cols / 14 + offset[0], rows / 14 + offset[1], int(rng.integers(2**31)))
    holes |= blobs > profile.depth_blob_level
    mm = np.clip(np.rint(noisy * DEPTH_MM_PER_M), 1, 65535).astype(np.uint16)
    mm[~valid | holes] = 0
    return mm


# (emissivity, offset by day K, offset at night K, solar gain K, texture amplitude K)
_THERMAL = np.zeros((len(Material), 5), dtype=_F32)
for _m, _row in {
    Material.ASPHALT: (0.95, 1.0, 3.5, 20.0, 0.8),
    Material.MARKING: (0.92, 0.5, 2.5, 12.0, 0.2),
    Material.PAVING: (0.93, 0.5, 2.5, 14.0, 0.6),
    Material.CURB: (0.93, 0.5, 2.0, 12.0, 0.4),
    Material.GRASS: (0.98, -1.5, -2.0, 4.0, 0.6),
    Material.BRICK: (0.93, 0.5, 1.5, 9.0, 0.5),
    Material.PLASTER: (0.91, 0.5, 1.2, 8.0, 0.6),
    Material.GLASS: (0.84, 0.0, 1.0, 2.0, 0.2),
    Material.CONCRETE: (0.94, 0.5, 1.5, 10.0, 0.5),
    Material.SLATS: (0.90, 0.0, 0.0, 7.0, 0.4),
    Material.METAL: (0.35, 0.0, 0.0, 12.0, 0.2),
    Material.SIGN: (0.80, 0.0, -0.5, 9.0, 0.2),
    Material.BARK: (0.95, 0.0, 0.0, 4.0, 0.4),
    Material.FOLIAGE: (0.97, -0.5, -1.0, 2.0, 1.0),
    Material.PAINT: (0.90, 0.0, -0.5, 10.0, 0.4),
    Material.TYRE: (0.95, 1.0, 0.5, 6.0, 0.3),
    Material.LAMP: (0.90, 2.0, 2.0, 3.0, 0.2),
    Material.SKIN: (0.98, 0.0, 0.0, 0.0, 0.5),
    Material.CLOTH: (0.95, 0.0, 0.0, 2.0, 0.8),
}.items():
    _THERMAL[_m] = _row
SKIN_K = 306.0
"""Skin surface temperature (33 °C) at 20 °C air; it follows the air at 5 %."""


@dataclass(frozen=True)
class ThermalCamera:
    """Per-sequence thermal camera: fixed-pattern offsets (K), vignetting strength, optics blur."""

    column_offsets: np.ndarray
    pixel_offsets: np.ndarray
    vignetting_k: float
    blur_px: float
    netd_k: float

    @classmethod
    def random(cls, height: int, width: int, rng: np.random.Generator) -> ThermalCamera:
        """A camera with its own fixed pattern: column offsets σ 0.15 K, pixel offsets σ 0.06 K."""
        return cls(
            column_offsets=(0.15 * rng.standard_normal(width)).astype(_F32),
            pixel_offsets=(0.06 * rng.standard_normal((height, width))).astype(_F32),
            vignetting_k=float(rng.uniform(0.8, 3.0)),
            blur_px=float(rng.uniform(0.6, 1.1)),
            netd_k=float(rng.uniform(0.04, 0.08)),
        )


def surface_temperature(g: GBuffer, scene: Scene) -> np.ndarray:
    """True apparent temperature (K) per pixel, before the camera's optics and noise."""
    light = scene.lighting
    table = _THERMAL[g.material]
    emissivity = table[..., 0]
    offset = table[..., 2] if light.night else table[..., 1]
    sun_dir = np.asarray(light.sun_dir, dtype=_F32)
    sunlit = np.maximum(g.normal @ sun_dir, 0) * _F32(light.sun_heating)
    p = g.positions()
    u = np.where(g.normal[..., 1] > 0.5, p[..., 0], p[..., 0] + p[..., 2])
    v = np.where(g.normal[..., 1] > 0.5, p[..., 2], p[..., 1])
    variation = value_noise(u * 1.5, v * 1.5, scene.texture_seed + 7) - 0.5
    t = light.air_k + offset + table[..., 3] * sunlit + g.heat + 2 * table[..., 4] * variation
    skin = g.material == Material.SKIN
    t = np.where(skin, SKIN_K + 0.05 * (light.air_k - 293.0) + g.heat + variation, t)
    env = light.air_k - (light.air_k - light.sky_k) * (0.3 + 0.5 * np.maximum(g.normal[..., 1], 0))
    apparent = (emissivity * t**4 + (1 - emissivity) * env**4) ** 0.25
    sky = g.material == Material.SKY
    if sky.any():
        elevation = np.clip(g.rays[sky][:, 1] / np.linalg.norm(g.rays[sky], axis=-1), 0, 1)
        clear = light.sky_k + (light.air_k - light.sky_k) * (1 - elevation) ** 6
        apparent[sky] = clear + g.clouds[sky] * (light.air_k - 4 - clear) * 0.8
    return apparent.astype(_F32)


def thermal_image(
    g: GBuffer, scene: Scene, camera: ThermalCamera, rng: np.random.Generator, profile: SensorProfile = DEFAULT_SENSORS
) -> np.ndarray:
    """Apparent temperature → uint16 counts (centi-Kelvin) through calibration, blur, vignetting, fixed pattern and NETD."""
    t = surface_temperature(g, scene)
    if profile.thermal_gain != 1 or profile.thermal_offset_k != 0:  # a camera calibrated around 20 °C, imperfectly
        t = _F32(293.15) + (t - _F32(293.15)) * _F32(profile.thermal_gain) + _F32(profile.thermal_offset_k)
    t = cv2.GaussianBlur(t, (0, 0), camera.blur_px)
    h, w = t.shape
    t = t - _F32(camera.vignetting_k) * _vignette(h, w) + camera.column_offsets[None, :] + camera.pixel_offsets
    t = t + _F32(camera.netd_k) * rng.standard_normal(t.shape, dtype=_F32)
    t = t + _F32(0.03) * rng.standard_normal((h, 1), dtype=_F32)  # row noise of the readout
    return np.clip(np.rint(t * THERMAL_COUNTS_PER_KELVIN), 0, 65535).astype(np.uint16)



class EventCamera:
    """One event sensor per sequence: simulator state, hot pixels and noise carried across frames.

    Args:
        height, width: Sensor size in pixels.
        seed: Seed of the threshold mismatch and the hot-pixel draw.
        night: Night sequence (more background activity).
        profile: Contrast threshold and background-activity scale.
    """

    def __init__(
        self, height: int, width: int, seed: int, night: bool, profile: SensorProfile = DEFAULT_SENSORS
    ) -> None:
        self.shape = (height, width)
        pixels = {**EVENT_SIMULATOR, "c_on": profile.event_threshold, "c_off": profile.event_threshold}
        self.simulator = EventSimulator(EventSimulatorConfig(seed=seed, **pixels))  # type: ignore[arg-type]
        rng = np.random.default_rng(seed)
        n_hot = max(1, height * width // 20000)
        self.hot = rng.integers(0, height * width, n_hot)
        self.background_hz = (BACKGROUND_HZ[1] if night else BACKGROUND_HZ[0]) * profile.event_background

    def step(self, luminance: np.ndarray, t_us: int, rng: np.random.Generator) -> Events:
        """Events since the previous step, from a linear luminance frame at ``t_us`` with shot noise."""
        noise = np.minimum(0.01 / np.sqrt(np.maximum(luminance, 1e-4) / 0.1), 0.08)
        frame = luminance * np.exp(noise * rng.standard_normal(luminance.shape, dtype=_F32))
        return self.simulator.step(frame.astype(np.float64), t_us)

    def noise(self, t0_us: int, t1_us: int, rng: np.random.Generator) -> Events:
        """Background activity and hot-pixel events in ``[t0_us, t1_us)``."""
        h, w = self.shape
        span = t1_us - t0_us
        n = rng.poisson(self.background_hz * h * w * span * 1e-6)
        hot = np.repeat(self.hot, rng.poisson(span / 10_000, len(self.hot)))
        index = np.concatenate([rng.integers(0, h * w, n), hot])
        t = rng.integers(t0_us, t1_us, len(index))
        return Events.from_arrays(index % w, index // w, t, rng.integers(0, 2, len(index)))
