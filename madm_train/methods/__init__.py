"""Adaptation methods behind one interface (:mod:`madm_train.methods.base`), named in one plain dict.

``METHODS`` maps the ``method.name`` tag of a training config to the method's config class; the
class's ``build`` imports and builds the method itself, so importing this package stays light. A
new method is one folder (or module) and one line here.
"""

from __future__ import annotations

from madm_train.methods.diff.config import DiffConfig
from madm_train.methods.iccld.config import IccldConfig
from madm_train.methods.madm.config import MadmConfig
from madm_train.methods.source_only import SourceOnlyConfig

__all__ = ["METHODS"]

METHODS: dict[str, type] = {
    "source_only": SourceOnlyConfig,
    "madm": MadmConfig,
    "diff": DiffConfig,
    "iccld": IccldConfig,
}
"""``method.name`` → its config class (a frozen dataclass with ``for_task``, ``check`` and ``build``)."""
