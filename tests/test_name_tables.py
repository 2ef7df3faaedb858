"""Every list of backend, event message type, label set or modality names is read from its one table.

A hand-written copy (``choices=("depth", "thermal")``, ``Literal["dsec11", "fmb9"]``, ``x in ("auto",
"onnxruntime")``) goes stale the day the table grows. The scan below parses the packages, the bench
scripts and the launch files and fails on any tuple, list or set literal that spells out two or more
names of one table outside the table's own module. Single names (a default, ``kind == "tensorrt"``)
and dicts keyed by names (a per-modality attribute such as an encoding) are not copies of the list.
Tests are not scanned: they spell values out on purpose, to pin them.
"""

from __future__ import annotations

import ast
import typing
from pathlib import Path

import pytest

from madm_ros.backends import BACKEND_CHOICES
from madm_ros.errors import ConfigError
from madm_ros.events.types import EVENT_ARRAY_MESSAGES, MESSAGE_TYPES
from madm_ros.folder_layout import MODALITY_ENCODINGS
from madm_ros.palettes import LABEL_MAPPING_SOURCES, LABEL_SETS
from madm_ros.preprocessing import ENCODINGS, IMAGE_MODALITIES, MODALITIES, NODE_MODALITIES

REPO = Path(__file__).resolve().parents[1]
SCANNED = ("madm_ros", "madm_train", "bench", "launch", "scripts")

# table → (its module, the names it holds)
TABLES: dict[str, tuple[str, frozenset[str]]] = {
    "backends": ("madm_ros/backends/__init__.py", frozenset(BACKEND_CHOICES)),
    "event message types": ("madm_ros/events/types.py", frozenset(MESSAGE_TYPES)),
    "event ROS message types": ("madm_ros/events/types.py", frozenset(MESSAGE_TYPES.values())),
    "label sets": ("madm_ros/palettes.py", frozenset(LABEL_MAPPING_SOURCES)),
    "modalities": ("madm_ros/preprocessing.py", frozenset(MODALITIES)),
}

# (file, names spelled out together): a deliberate choice, not a copy of the table.
ALLOWED: dict[tuple[str, frozenset[str]], str] = {
    ("madm_train/config.py", frozenset({"depth", "events", "rgb"})): "the task names (with infrared), not modalities",
    ("madm_train/methods/madm/config.py", frozenset({"depth", "rgb"})): "the tasks that keep MADM's default values",
    ("bench/madm_step.py", frozenset({"events", "rgb"})): "the timed step needs only an RGB source and one target",
    ("bench/node_bench/node_process.py", frozenset({"depth", "events"})):
        "the node benchmark measures one image node and the event node, not every modality",
    ("bench/node_bench/models.py", frozenset({"depth", "events"})):
        "the models of those two benchmarked nodes",
}


def python_files() -> list[Path]:
    files = [p for top in SCANNED for p in sorted((REPO / top).rglob("*.py"))]
    return [p for p in files if "__pycache__" not in p.parts and ".venv" not in p.parts] + [REPO / "setup.py"]


def spelled_lists(text: str, relative: str) -> list[tuple[int, str, frozenset[str]]]:
    """``(line, table, names)`` for each literal of ``text`` (file ``relative``) that lists two or more names of a
    table whose module ``relative`` is not."""
    found = []
    for node in ast.walk(ast.parse(text, relative)):
        if not isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            continue
        strings = {e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)}
        for table, (owner, names) in TABLES.items():
            spelled = frozenset(strings & names)
            if len(spelled) >= 2 and relative != owner:
                found.append((node.lineno, table, spelled))
    return sorted(found, key=lambda f: f[0])


def copies_in(text: str, relative: str) -> list[str]:
    """``file:line: names (table: read its module)`` for each list of :func:`spelled_lists` not in :data:`ALLOWED`."""
    return [f"{relative}:{line}: {', '.join(sorted(names))} ({table}: read {TABLES[table][0]})"
            for line, table, names in spelled_lists(text, relative) if (relative, names) not in ALLOWED]


def test_no_module_spells_out_names_of_a_table():
    copies = [line for path in python_files()
              for line in copies_in(path.read_text(encoding="utf-8"), path.relative_to(REPO).as_posix())]
    assert not copies, "name lists copied from their table:\n" + "\n".join(copies)


def test_the_scan_finds_copies_but_not_single_names_or_the_table_itself():
    text = ('from typing import Literal\nX = Literal["depth", "events"]\nY = dict(choices=("auto", "onnxruntime"))\n'
            'Z = kind in ("tensorrt", "cuda") or modality == "depth"\n')
    assert copies_in(text, "madm_ros/x.py") == [
        "madm_ros/x.py:2: depth, events (modalities: read madm_ros/preprocessing.py)",
        "madm_ros/x.py:3: auto, onnxruntime (backends: read madm_ros/backends/__init__.py)",
    ]
    assert copies_in(text, "madm_ros/preprocessing.py") == [
        "madm_ros/preprocessing.py:3: auto, onnxruntime (backends: read madm_ros/backends/__init__.py)"]


def test_allowed_entries_still_exist():
    # an allow-list entry whose literal is gone must go too, or it would excuse a later copy
    present = {(relative, names) for relative, _ in ALLOWED
               for _, _, names in spelled_lists((REPO / relative).read_text(encoding="utf-8"), relative)}
    assert set(ALLOWED) <= present


def test_named_subsets_are_drawn_from_their_tables():
    assert set(IMAGE_MODALITIES) < set(NODE_MODALITIES) < set(MODALITIES)
    assert set(EVENT_ARRAY_MESSAGES) < set(MESSAGE_TYPES)
    assert set(LABEL_SETS) < set(LABEL_MAPPING_SOURCES)


def test_per_modality_tables_cover_every_modality():
    assert set(ENCODINGS) == set(MODALITIES)
    assert set(MODALITY_ENCODINGS) == set(MODALITIES)


def test_training_config_takes_its_modalities_from_the_table():
    from madm_train.config import DataConfig

    assert typing.get_args(typing.get_type_hints(DataConfig)["modality"]) == MODALITIES


def test_training_config_takes_its_label_sets_from_the_table():
    from madm_train.config import DataConfig

    for name in LABEL_SETS:
        assert DataConfig(label_set=name).label_set == name
    with pytest.raises(ConfigError, match="data.label_set must be one of cityscapes19, dsec11, fmb9, got 'fmb15'"):
        DataConfig(label_set="fmb15")
