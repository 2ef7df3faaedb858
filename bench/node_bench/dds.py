"""Which DDS setup a run used: the RMW and the Fast DDS XML profile in effect (``FASTDDS_DEFAULT_PROFILES_FILE``).

Recorded because the profile decides the transport: ``scripts/in-env``'s ``config/fastdds_loopback.xml``
gives an 8 MiB shared-memory segment and UDP on the loopback only, Fast DDS's built-ins a 512 KiB
segment and UDP on every interface — a different latency for camera-size images.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def dds_info() -> dict[str, Any]:
    """The RMW and the Fast DDS profile in effect for this process and its children."""
    info: dict[str, Any] = {"rmw_implementation": os.environ.get("RMW_IMPLEMENTATION", "(default)")}
    path = os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE", "")
    if not path:
        return info | {"fastdds_profiles_file": None,
                       "transports": "FASTDDS_DEFAULT_PROFILES_FILE unset: Fast DDS built-in transports "
                                     "(512 KiB shared-memory segment, UDPv4 on every interface)"}
    file = Path(path).resolve()
    shipped = (REPO / "config" / "fastdds_loopback.xml").resolve()
    info |= {"fastdds_profiles_file": str(file.relative_to(REPO)) if file.is_relative_to(REPO) else str(file),
             "is_shipped_profile": file == shipped}
    try:
        text = file.read_text()
    except OSError as error:
        return info | {"error": str(error)}
    return info | {"sha256": hashlib.sha256(text.encode()).hexdigest()[:16],
                   "shm_segment_bytes": [int(v) for v in re.findall(r"<segment_size>\s*(\d+)", text)],
                   "udp_interface_whitelist": re.findall(r"<address>\s*([^<\s]+)", text)}
