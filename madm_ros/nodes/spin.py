"""Spin one or more nodes in one process until Ctrl-C: the body of every node executable."""

from __future__ import annotations

import signal
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["spin_nodes"]


def spin_nodes(factories: Sequence[Callable[..., Any]], args: list[str] | None = None, *,
               node_kwargs: Sequence[dict[str, Any]] | None = None) -> int:
    """Create each node with ``factories[i](**node_kwargs[i])`` and spin them on one single-threaded executor.

    Single-threaded on purpose: inference already runs on each node's own thread, and with rclpy's
    multi-threaded executor an event node lost a third to half of the events and answered about 1 s
    late (1-50 Mev/s), while one thread keeps up with 50 Mev/s (bench/node_latency.py).
    """
    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

    rclpy.init(args=args)
    nodes = []
    try:
        nodes = [factory(**(node_kwargs[i] if node_kwargs else {})) for i, factory in enumerate(factories)]
        executor = SingleThreadedExecutor()
        for node in nodes:
            executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not break the clean-up
        for node in nodes:
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0
