"""Prophesee RAW files (EVT 2.0 / EVT 3.0): ``%`` header lines, then the sensor's words.

The header is ASCII lines starting with ``%`` (``% evt 2.0``, ``% format EVT3;height=720;width=1280``,
``% geometry 640x480``, ``% plugin_name hal_plugin_gen3_fx3``, optionally ``% end``). The body is
decoded in chunks by the same kernels as ROS ``EventPacket`` payloads
(:class:`madm_ros.events.codecs.PacketDecoder`), so a chunk boundary may fall anywhere.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

from madm_ros.errors import DecodeError
from madm_ros.events.codecs import PacketDecoder
from madm_ros.events.types import DecodeStats, Events

__all__ = ["RawFile"]

_LOG = logging.getLogger(__name__)
_EVT_VERSIONS = {"2.0": "evt2", "3.0": "evt3"}
_FORMAT_NAMES = {"EVT2": "evt2", "EVT3": "evt3"}
_GEN3_SIZE = (640, 480)  # Prophesee Gen3 / Gen3.1 VGA sensors (DSEC's event cameras)
_MAX_HEADER = 1 << 20
_CHUNK_BYTES = 1 << 22


class RawFile:
    """A Prophesee RAW recording.

    Args:
        path: the ``.raw`` file.
        width: sensor columns, overriding the header (needed when the header has no size and
            the plugin is not a Gen3 one).
        height: sensor rows, as ``width``.

    Attributes:
        width, height: sensor size; from ``% format``, else ``% geometry``, else 640×480 for Gen3
            plugins (``geometry_source`` says which, and a default is logged).
        encoding: ``"evt2"`` or ``"evt3"``.
        header: header keys and values as written (``"evt"``, ``"format"``, ``"plugin_name"``, ...).
        geometry_source: where ``width`` and ``height`` came from.
        stats: counters of the last :meth:`chunks` / :meth:`read_all` pass.

    Raises:
        DecodeError: missing or corrupt header, an unsupported encoding or an unknown sensor size;
            the message names the file.

    """

    def __init__(self, path: str | Path, *, width: int | None = None, height: int | None = None) -> None:
        self.path = Path(path)
        try:
            with self.path.open("rb") as f:
                head = f.read(_MAX_HEADER)
        except OSError as exc:
            raise DecodeError(f"cannot read RAW file {self.path}: {exc.strerror}") from None
        self.header, self._body_offset = self._parse_header(head)
        self.encoding = self._encoding()
        self.width, self.height, self.geometry_source = self._geometry(width, height)
        self.stats = DecodeStats()

    def _parse_header(self, head: bytes) -> tuple[dict[str, str], int]:
        if not head.startswith(b"%"):
            raise DecodeError(f"{self.path} is not a Prophesee RAW file: it does not start with a '%' header line")
        header: dict[str, str] = {}
        pos = 0
        while pos < len(head) and head[pos : pos + 1] == b"%":
            end = head.find(b"\n", pos)
            if end < 0:
                raise DecodeError(f"RAW header of {self.path} is cut off (no end of line within {len(head)} bytes)")
            try:
                line = head[pos + 1 : end].decode("ascii").strip()
            except UnicodeDecodeError:
                raise DecodeError(f"RAW header of {self.path} has a non-ASCII line at byte {pos}") from None
            pos = end + 1
            if line == "end":
                break
            key, _, value = line.partition(" ")
            if key:
                header[key] = value.strip()
        return header, pos

    def _encoding(self) -> str:
        if "format" in self.header:
            name = self.header["format"].split(";", 1)[0].strip().upper()
            if name in _FORMAT_NAMES:
                return _FORMAT_NAMES[name]
            raise DecodeError(
                f"{self.path}: unsupported RAW format {name!r}; supported: {', '.join(sorted(_FORMAT_NAMES))}"
            )
        if "evt" in self.header:
            version = self.header["evt"]
            if version in _EVT_VERSIONS:
                return _EVT_VERSIONS[version]
            raise DecodeError(
                f"{self.path}: unsupported event format 'evt {version}'; supported: evt {', evt '.join(_EVT_VERSIONS)}"
            )
        raise DecodeError(f"{self.path}: RAW header names no event format (no '% evt' or '% format' line)")

    def _geometry(self, width: int | None, height: int | None) -> tuple[int, int, str]:
        if width is not None and height is not None:
            return int(width), int(height), "caller"
        if (width is None) != (height is None):
            raise DecodeError(f"{self.path}: give both width and height or neither")
        fields = dict(part.split("=", 1) for part in self.header.get("format", "").split(";")[1:] if "=" in part)
        if "width" in fields and "height" in fields:
            try:
                return int(fields["width"]), int(fields["height"]), "format line"
            except ValueError:
                raise DecodeError(f"{self.path}: bad size in '% format {self.header['format']}'") from None
        if "geometry" in self.header:
            match = re.fullmatch(r"(\d+)\s*x\s*(\d+)", self.header["geometry"])
            if not match:
                raise DecodeError(f"{self.path}: bad '% geometry {self.header['geometry']}' (expected WxH)")
            return int(match[1]), int(match[2]), "geometry line"
        plugin = self.header.get("plugin_name", "")
        if "gen3" in plugin.lower():
            _LOG.info(
                "%s: no sensor size in the header; using %dx%d for Gen3 plugin %s", self.path, *_GEN3_SIZE, plugin
            )
            return (*_GEN3_SIZE, f"default for Gen3 plugin {plugin}")
        raise DecodeError(
            f"{self.path}: RAW header has no sensor size (no '% format ...;width=;height=' or '% geometry' "
            f"line) and plugin {plugin or '(none)'!r} is not a Gen3 one; give the sensor size "
            "(python -m madm_ros.events info FILE --sensor-size WxH; in Python RawFile(path, width=, height=))"
        )

    def chunks(self, max_events: int = 1_000_000) -> Iterator[Events]:
        """Decode the body in order, yielding pieces of at most ``max_events`` events.

        Each call starts from the beginning with fresh counters in :attr:`stats`.
        """
        if max_events < 1:
            raise DecodeError(f"max_events must be at least 1, got {max_events}")
        decoder = PacketDecoder(self.encoding, self.width, self.height)
        self.stats = decoder.stats
        with self.path.open("rb") as f:
            f.seek(self._body_offset)
            while block := f.read(_CHUNK_BYTES):
                events = decoder.decode(block)
                for start in range(0, len(events), max_events):
                    yield events[start : start + max_events]
        decoder.flush()

    def read_all(self) -> Events:
        """All events of the file."""
        return Events.concatenate(list(self.chunks(max_events=1 << 62)))
