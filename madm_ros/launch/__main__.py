"""``python -m madm_ros.launch NAME [name:=value ...]``: see :mod:`madm_ros.launch.cli`."""

import sys

from madm_ros.launch.cli import main

sys.exit(main())
