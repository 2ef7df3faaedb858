"""The in-process runner's command line: ``python -m madm_ros.launch NAME [name:=value ...] [--dry-run]``.

For machines where ``ros2 launch`` is not installed: the launch's nodes are created in this one
process and spun until Ctrl-C. The node's configure is rehearsed first
(:func:`madm_ros.launch.launch_problems`: files, parameters, model), so a missing model or a
misspelt parameter fails here with one line, with the same words for ``--dry-run`` and a real
start, instead of a node that waits unconfigured or silently drops the parameter.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Sequence

from madm_ros.errors import ConfigError
from madm_ros.launch.preflight import launch_problems
from madm_ros.launch.specs import NodeSpec, node_specs, rviz_command
from madm_ros.launch.table import LAUNCHES, PACKAGE

__all__ = ["main", "parse_launch_arguments"]

PROGRAM = "madm_ros.launch"


def _usage() -> str:
    lines = ["usage: python -m madm_ros.launch NAME [name:=value ...] [--params-file FILE] [--dry-run] [--ros-args ...]",
             "",
             "Starts the nodes of launch/NAME.launch.py in this process (for machines without `ros2 launch`).",
             "Empty string arguments keep the params file's value. Ctrl-C stops the nodes (exit code 0).",
             "The node's configure is rehearsed first (files exist, parameters are its own and in range, the",
             "model loads and suits the launch); any problem exits with code 2, one line each.",
             "",
             "options:",
             "  --params-file FILE  same as params_file:=FILE",
             "  --dry-run           rehearse, print the nodes and their ROS arguments as JSON, start nothing",
             "  --ros-args ...      further ROS arguments for every node (e.g. -p overlay_alpha:=0.3)",
             "  -h, --help          this text",
             ""]
    for spec in LAUNCHES.values():
        lines.append(f"{spec.name}: {spec.description} (node {spec.node_name}, ros2 run {PACKAGE} {spec.executable})")
        for argument in spec.arguments:
            lines.append(f"  {argument.name + ':=' + repr(argument.default):<32} {argument.description}")
        lines.append("")
    return "\n".join(lines)


def parse_launch_arguments(argv: Sequence[str]) -> tuple[str, dict[str, str], bool, list[str]]:
    """``(launch name, arguments, dry_run, extra ROS arguments)`` of a command line (``ConfigError`` if malformed)."""
    argv = list(argv)
    extra: list[str] = []
    if "--ros-args" in argv:
        at = argv.index("--ros-args")
        argv, extra = argv[:at], argv[at + 1:]
    name: str | None = None
    arguments: dict[str, str] = {}
    dry_run = False
    items = iter(argv)
    for item in items:
        if item == "--dry-run":
            dry_run = True
        elif item == "--params-file" or item.startswith("--params-file="):
            value = item.partition("=")[2] if "=" in item else next(items, None)
            if not value:
                raise ConfigError("--params-file needs a file")
            arguments["params_file"] = value
        elif ":=" in item:
            key, _, value = item.partition(":=")
            arguments[key] = value
        elif item.startswith("-"):
            raise ConfigError(f"unknown option {item}")
        elif name is None:
            name = item
        else:
            raise ConfigError(f"unexpected {item!r}: launch arguments are written name:=value")
    if name is None:
        raise ConfigError(f"name a launch: {', '.join(LAUNCHES)}")
    return name, arguments, dry_run, extra


def _run(specs: list[NodeSpec], rviz: list[str] | None) -> int:
    import os
    import subprocess

    from madm_ros.nodes.spin import spin_nodes

    # node logs appear at once when stderr is a pipe or file too (ros2 launch's emulate_tty does the same job)
    os.environ.setdefault("RCUTILS_LOGGING_BUFFERED_STREAM", "0")

    viewer = None
    if rviz is not None:
        if shutil.which(rviz[0]) is None:
            print(f"{PROGRAM}: rviz:=true but rviz2 is not installed here; starting the nodes without it", file=sys.stderr)
        else:
            viewer = subprocess.Popen(rviz)
    for spec in specs:
        name = f"{spec.namespace}/{spec.node_name}" if spec.namespace else f"/{spec.node_name}"
        print(f"{PROGRAM}: starting {name} ({spec.factory.target}) {' '.join(spec.cli_args)}", file=sys.stderr)
    try:
        return spin_nodes([spec.factory for spec in specs], [sys.argv[0] if sys.argv else PROGRAM],
                          node_kwargs=[{"node_name": spec.node_name, **spec.node_kwargs()} for spec in specs])
    finally:
        if viewer is not None:
            viewer.terminate()
            viewer.wait(timeout=10)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; returns the exit code (2 for a bad command line or a missing file)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    head = argv[:argv.index("--ros-args")] if "--ros-args" in argv else argv
    if not argv:
        print(_usage(), file=sys.stderr)
        return 2
    if "-h" in head or "--help" in head:
        print(_usage())
        return 0
    try:
        name, arguments, dry_run, extra = parse_launch_arguments(argv)
        problems = launch_problems(name, arguments, extra)
        if not problems:
            specs = node_specs(name, arguments)
            rviz = rviz_command(name, arguments)
    except ConfigError as error:
        problems = [str(error)]
    if problems:
        for problem in problems:
            print(f"{PROGRAM}: {problem}", file=sys.stderr)
        return 2
    if extra:
        specs = [NodeSpec(s.factory, s.node_name, s.namespace, [*s.cli_args, *extra], s.executable) for s in specs]
    if dry_run:
        print(json.dumps({"launch": name, "nodes": [s.to_json() for s in specs], "rviz": rviz}, indent=1))
        return 0
    return _run(specs, rviz)
