"""Networks: the Stable Diffusion backbone, the DAFormer head, the MADM model, the tiny preset and the student.

Constructors build on the CPU in float32 and never download; loading from disk is done by
``from_pretrained``/``load`` class methods. Every saved model folder carries a ``format`` tag in its
``config.json`` (see ``madm_train.models.saved``).
"""
