"""``python -m madm_ros.bag_eval``: see :mod:`madm_ros.bag_eval`."""

import sys

from madm_ros.bag_eval.cli import main

sys.exit(main())
