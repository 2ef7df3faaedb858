"""Where the built-in default models live: ``models/<modality>_student.onnx``.

They are students distilled by the project's own pipeline from MADM teachers adapted on the
synthetic scenes (``models/README.md`` is their model card). They let a fresh machine run the
demo and the nodes without any download; for real sensors, train and export your own.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from madm_ros.errors import ConfigError

__all__ = ["default_model_path", "model_card", "models_dirs"]


def models_dirs() -> list[Path]:
    """Folders searched, in order: ``$MADM_MODELS_DIR``, the checkout's ``models/``, the installed share folder."""
    dirs = [Path(os.environ["MADM_MODELS_DIR"])] if os.environ.get("MADM_MODELS_DIR") else []
    dirs.append(Path(__file__).resolve().parents[1] / "models")
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

        with contextlib.suppress(PackageNotFoundError, LookupError, OSError, ValueError):  # no ament index here
            dirs.append(Path(get_package_share_directory("madm_ros")) / "models")
    except ImportError:
        pass
    return dirs


def default_model_path(modality: str) -> Path:
    """The default ONNX model for ``modality`` (``events``, ``depth`` or ``thermal``).

    Raises:
        ConfigError: no such file in any of :func:`models_dirs`, naming the folders and the fix.
    """
    name = f"{modality}_student.onnx"
    searched = models_dirs()
    for folder in searched:
        if (folder / name).is_file():
            return folder / name
    raise ConfigError(f"no default model {name} in {', '.join(map(str, searched))}; set model_file_path to an "
                      f"exported model (python -m madm_train export) or regenerate the defaults (scripts/make-default-models)")


def model_card(model: str | Path) -> dict[str, Any]:
    """The card beside an ONNX model (``<name>.json``, as ``scripts/make-default-models`` writes it), or ``{}``.

    Why: the card says what data a default student was trained on (``data.generate_hw``,
    ``data.scenes``), so the demo can show it scenes like those; a model without a card is fine.
    """
    card_file = Path(model).with_suffix(".json")
    try:
        card = json.loads(card_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return card if isinstance(card, dict) else {}
