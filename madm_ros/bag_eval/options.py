"""What one ``bag_eval`` run evaluates and where it writes: :class:`EvalOptions`, checked on construction."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from madm_ros.errors import ConfigError

__all__ = ["OUTPUT_BAG_FORMATS", "EvalOptions"]

OUTPUT_BAG_FORMATS = ("sqlite3", "mcap", "none")


@dataclass(frozen=True)
class EvalOptions:
    """What to evaluate (``--help`` explains each); ``None`` = the node parameter file's value or the default.

    Raises:
        ConfigError: contradictory or out-of-range options (checked here, before any file is opened).
    """

    bag: Path
    out: Path
    config: Path | None = None
    model: str | None = None
    backend: str | None = None
    threads: int | None = None
    topic: str | None = None
    label_topic: str | None = None
    label_dir: Path | None = None
    tolerance_ms: float | None = None
    label_set: str | None = None
    output_bag_format: str = "sqlite3"  # sqlite3, mcap or none
    output_prefix: str | None = None
    max_frames: int | None = None
    overlays: int = 24
    overwrite: bool = False
    progress: bool = False

    def __post_init__(self) -> None:
        if self.label_topic and self.label_dir:
            raise ConfigError("give labels as --label-topic or --label-dir, not both")
        if self.output_bag_format not in OUTPUT_BAG_FORMATS:
            raise ConfigError(f"--output-bag-format must be sqlite3, mcap or none, got {self.output_bag_format!r}")
        if self.tolerance_ms is not None and not self.tolerance_ms >= 0:
            raise ConfigError(f"--tolerance-ms must be ≥ 0, got {self.tolerance_ms}")
        if self.max_frames is not None and self.max_frames < 1:
            raise ConfigError(f"--max-frames must be ≥ 1, got {self.max_frames}")
        if self.threads is not None and self.threads < 0:
            raise ConfigError(f"--threads must be ≥ 0 (0 = one per core), got {self.threads}")
        if self.overlays < 0:
            raise ConfigError(f"--overlays must be ≥ 0 (0 = none), got {self.overlays}")
