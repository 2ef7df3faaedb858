"""``python -m madm_train``: see :mod:`madm_train.cli`."""

import sys

from madm_train.cli import main

sys.exit(main())
