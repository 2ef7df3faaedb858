"""The node process and the protocol the bench drives it with, both ends.

A fresh process per run (``python -m bench.node_bench.node_process``), so that serialization and
the loopback transport are paid as in a deployment: ``spin_nodes`` — what every node executable and
``python -m madm_ros.launch`` run — spins one ``ImageSegmentationNode`` or ``EventSegmentationNode``
with the production parameters in the main thread; the node's public ``timing`` hook feeds a
:class:`~bench.node_bench.probe.Probe`. A ``protocol`` thread says ``ready`` on stdout, then answers
``mark`` / ``counters`` / ``report`` read on stdin, and ends the process as Ctrl-C does
(``rclpy.shutdown``). Protocol lines start with :data:`PREFIX`; anything else the process prints
goes to its stderr, which :class:`NodeProcess` keeps for the error message.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

PREFIX = "NODE_LATENCY "


class NodeProcess:
    """A node process started by the bench, talked to over its stdin / stdout."""

    def __init__(self, kind: str, model: str, threads: int, message_type: str = "", input_qos: str = "",
                 executor: str = "shipped") -> None:
        command = [sys.executable, "-m", "bench.node_bench.node_process", "--kind", kind, "--model", model,
                   "--threads", str(threads), "--executor", executor]
        if message_type:
            command += ["--message-type", message_type]
        if input_qos:
            command += ["--input-qos", input_qos]
        self.log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - the node's stderr, closed in close()
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(PREFIX):
                self.lines.put(line[len(PREFIX):].rstrip("\n"))
        self.lines.put("exited")

    def expect(self, word: str, timeout: float = 60.0) -> Any:
        """The payload of the next protocol line, which must be ``word`` (else the error names what came and the log)."""
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            line = "timeout"
        name, _, payload = line.partition(" ")
        if name != word:
            self.log.seek(0)
            raise RuntimeError(f"node process said {line[:300]!r} instead of {word!r}; its log ends:\n{self.log.read()[-3000:]}")
        return json.loads(payload) if payload else None

    def ask(self, command: str, answer: str, timeout: float = 30.0) -> Any:
        """Send ``command`` and return the payload of the ``answer`` line."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.expect(answer, timeout)

    def close(self) -> None:
        """End the process (closing stdin shuts the node down; killed after 20 s)."""
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            self.proc.wait(timeout=20)
        except (subprocess.TimeoutExpired, BrokenPipeError):
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def serve(args: argparse.Namespace) -> int:
    """The node process's body: the node under ``spin_nodes``, timed through its hook, answering the protocol."""
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything else printed goes to stderr

    def say(word: str, payload: Any = None) -> None:
        protocol.write(PREFIX + word + ("" if payload is None else " " + json.dumps(payload)) + "\n")

    import rclpy
    from rclpy.parameter import Parameter

    from bench.node_bench.probe import Probe
    from madm_ros.nodes.event_segmentation import EventSegmentationNode
    from madm_ros.nodes.image_segmentation import ImageSegmentationNode
    from madm_ros.nodes.spin import spin_nodes

    if args.kind == "events":
        from bench.node_bench.event_stream import warm_event_kernels

        warm_event_kernels()
    probe = Probe()
    overrides = [Parameter("model_file_path", value=args.model), Parameter("threads", value=args.threads),
                 Parameter("backend", value="onnxruntime")]
    if args.kind == "events":
        overrides.append(Parameter("message_type", value=args.message_type))
    else:
        overrides.append(Parameter("modality", value="depth"))
    if args.input_qos:
        overrides.append(Parameter("input_qos", value=args.input_qos))

    def answer(node: Any) -> None:
        while node.executor is None:  # spin_nodes adds the node right after the factory returns
            time.sleep(0.01)
        say("ready", {"node": node.get_fully_qualified_name(), "executor": type(node.executor).__name__,
                      "input_qos": node.params.input_qos})
        for line in sys.stdin:
            command = line.strip()
            if command == "mark":
                probe.mark(node)
                say("marked")
            elif command == "counters":
                say("counters", {**{k: v for k, v in node.counters().items() if isinstance(v, int)},
                                 "last_callback_ns": probe.last_callback_ns})
            elif command == "report":
                say("report", probe.report(node))
                break
        rclpy.shutdown()  # spin_nodes returns and destroys the node, as after Ctrl-C

    def factory(**kwargs: Any) -> Any:
        node = (EventSegmentationNode if args.kind == "events" else ImageSegmentationNode)(**kwargs)
        if node.segmenter is None or node.failure:
            say("failed", node.failure)
            raise SystemExit(1)
        node.timing = probe.add  # before the executor delivers the first message
        threading.Thread(target=answer, args=(node,), name="protocol", daemon=True).start()
        return node

    with contextlib.ExitStack() as stack:
        if args.executor == "multi":  # the comparison variant: spin_nodes with the old default executor
            from unittest import mock

            from rclpy.executors import MultiThreadedExecutor

            stack.enter_context(mock.patch("rclpy.executors.SingleThreadedExecutor", MultiThreadedExecutor))
        return spin_nodes([factory], ["node_latency"], node_kwargs=[{"parameter_overrides": overrides}])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="one segmentation node for bench/node_latency.py (started by it)")
    parser.add_argument("--kind", choices=("depth", "events"), required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--message-type", default="event_packet")
    parser.add_argument("--input-qos", default="")
    parser.add_argument("--executor", default="shipped", choices=("shipped", "multi"))
    return serve(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
