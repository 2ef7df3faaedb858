"""Which topic of the bag to evaluate, and the node parameters and model to evaluate it with.

Everything here runs before the first frame, and every problem it finds is a one-line error:
a path that is an event file rather than a bag, a missing or ambiguous topic, a parameter file
for another node, a model for another modality. The parameters are built exactly as the node
builds them from its parameter file (unknown keys are errors, as in the node).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from madm_ros.bag_eval.labels import describe_topics
from madm_ros.bag_eval.options import EvalOptions
from madm_ros.bag_source import IMAGE_TYPE
from madm_ros.errors import ConfigError, DecodeError
from madm_ros.node_params import load_node_config, params_from_values
from madm_ros.preprocessing import IMAGE_MODALITIES, NODE_MODALITIES
from madm_ros.segmenter import load_segmenter

__all__ = ["Setup", "setup"]


@dataclasses.dataclass(frozen=True)
class Setup:
    """The input topic, its kind (``image`` or ``events``), the node's parameters and the loaded model."""

    topic: str
    kind: str
    params: Any
    segmenter: Any
    modality_note: str | None = None  # set when the modality was guessed from the encoding


def _kind_of(msgtype: str) -> str | None:
    from madm_ros.events.bags import EVENT_TYPES

    return "events" if msgtype in EVENT_TYPES else "image" if msgtype == IMAGE_TYPE else None


def choose_topic(source: Any, options: EvalOptions, kind_hint: str | None) -> tuple[str, str]:
    """``(topic, kind)`` of the input: ``--topic``, or the one depth / thermal / event topic the bag has."""
    from madm_ros.events.bags import EVENT_TYPES

    if options.topic is not None:
        msgtype = source.topics.get(options.topic)
        if msgtype is None:
            raise DecodeError(f"bag {source.path} has no topic {options.topic!r}; it has: {describe_topics(source.topics)}")
        kind = _kind_of(msgtype)
        if kind is None:
            raise DecodeError(f"topic {options.topic} is {msgtype}, which is not a camera input; madm evaluates "
                              f"{IMAGE_TYPE} (depth, thermal) and {', '.join(EVENT_TYPES)}")
        if kind_hint is not None and kind != kind_hint:
            raise ConfigError(f"the parameter file is for the {kind_hint} node but topic {options.topic} is {msgtype}")
        return options.topic, kind
    candidates = sorted(t for t, m in source.topics.items() if _kind_of(m) and t != options.label_topic
                        and (kind_hint is None or _kind_of(m) == kind_hint))
    if len(candidates) != 1:
        found = "no depth, thermal or event topic" if not candidates else f"several inputs ({', '.join(candidates)})"
        raise DecodeError(f"bag {source.path} has {found}; choose one with --topic (topics: {describe_topics(source.topics)})")
    return candidates[0], _kind_of(source.topics[candidates[0]]) or "image"


def _peek_encoding(source: Any, topic: str) -> str:
    for _, msgtype, _, raw in source.messages({topic}):
        try:
            return str(source.deserialize(raw, msgtype).encoding)
        except Exception:  # an undecodable first message: try the next
            continue
    raise DecodeError(f"topic {topic} has no readable message" + (f" ({source.problem})" if source.problem else ""))


def setup(options: EvalOptions, source: Any) -> Setup:
    """Topic, kind, node parameters and segmenter, as the node would have them.

    Raises:
        MadmError: a missing or ambiguous topic, a bad parameter file, a model that cannot be
            loaded or is for another modality.
    """
    from madm_ros.events.stream import MESSAGE_TYPES
    from madm_ros.node_params import EventParams, ImageParams

    kind_hint, values = load_node_config(options.config) if options.config else (None, {})
    topic, kind = choose_topic(source, options, kind_hint)
    values = dict(values)
    for name, value in (("model_file_path", options.model), ("backend", options.backend), ("threads", options.threads)):
        if value is not None:
            values[name] = value
    source_name = str(options.config or "parameters")
    msgtype = source.topics[topic]
    if kind == "events":
        message_type = next(k for k, v in MESSAGE_TYPES.items() if v == msgtype)
        if values.setdefault("message_type", message_type) != message_type:
            raise ConfigError(f"topic {topic} carries {msgtype} but message_type is {values['message_type']}; "
                              f"set message_type: {message_type}")
        params = params_from_values(EventParams, values, source_name)
        return Setup(topic, kind, params, load_segmenter(params, "events"))
    if "modality" not in values and values.get("model_file_path"):  # the model says which
        params = params_from_values(ImageParams, values, source_name)
        segmenter = load_segmenter(params, None)
        if segmenter.modality not in IMAGE_MODALITIES:
            raise ConfigError(f"model {params.model_file_path} is for {segmenter.modality}, but topic {topic} carries images; "
                              "use a depth or thermal model")
        return Setup(topic, kind, dataclasses.replace(params, modality=segmenter.modality), segmenter)
    note = None
    if "modality" not in values:  # no model either: the encoding tells depth from thermal, as REP 118 names them
        encoding = _peek_encoding(source, topic)
        values["modality"] = {"16UC1": "depth", "32FC1": "depth", "mono16": "thermal"}.get(encoding)
        if values["modality"] is None:
            raise ConfigError(f"cannot tell whether {encoding} images on {topic} are depth or thermal; "
                              "give --config (config/depth.yaml or config/thermal.yaml) or --model")
        if encoding != "32FC1":  # some drivers name 16-bit depth mono16 and thermal counts 16UC1
            note = (f"{topic} taken for {values['modality']} from its {encoding} encoding (the usual name for "
                    f"{values['modality']}, but some drivers use the other 16-bit name); if it is not, give --config "
                    f"config/{'thermal' if values['modality'] == 'depth' else 'depth'}.yaml or --model")
    params = params_from_values(ImageParams, values, source_name)
    return Setup(topic, kind, params, load_segmenter(params, params.modality), note)


def model_caveat(segmenter: Any) -> str | None:
    """The warning for a built-in default model (trained on synthetic scenes only), ``None`` for the user's own."""
    from madm_ros.default_models import models_dirs

    path = segmenter.backend.describe().get("path")
    if not path:
        return None
    resolved = Path(path).resolve()
    defaults = {(d / f"{m}_student.onnx").resolve() for d in models_dirs() for m in NODE_MODALITIES}
    if resolved not in defaults:
        return None
    return (f"{resolved.name} is a built-in default model, trained on synthetic scenes only (models/README.md): on a "
            "real recording its masks follow the scene layout more than the input, so these scores say little about "
            "madm on your sensor; train your own (python -m madm_train adapt ...) and evaluate that")
