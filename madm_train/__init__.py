"""madm_train: MADM modality adaptation, distillation and export (``python -m madm_train``).

Importing the package loads nothing heavy; torch and diffusers load inside the commands.
"""

__version__ = "0.1.0"
