"""Synthetic multi-modal street scenes with labels: the zero-download default data and test data.

``generate(SynthConfig(...), out_dir)`` writes RGB, depth, thermal and event edge frames with
DSEC-11 labels in the generic folder layout (:mod:`madm_ros.folder_layout`);
``python -m madm_train synth`` is its command line. Modules: :mod:`.scene` (random layouts as
data), :mod:`.variety` (the varied scenes of ``scenes="varied"``), :mod:`.render` (ray-cast
G-buffer and RGB shading), :mod:`.sensors` (per-modality sensor models), :mod:`.generate`
(sequences, files, ``meta.json``).
"""

from madm_ros.synthetic.generate import GENERATOR_NAME, SynthConfig, generate

__all__ = ["GENERATOR_NAME", "SynthConfig", "generate"]
