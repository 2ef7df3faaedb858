"""bench/event_throughput.py at micro size: every row and headline key is there and finite (never a time threshold)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bench" / "event_throughput.py"


@pytest.mark.slow
def test_micro_run_writes_every_headline_key_and_the_rows_on_real_data(tmp_path: Path, event_bag: Path, evt2_raw: Path) -> None:
    pytest.importorskip("numba")
    pytest.importorskip("dv_processing")
    output = tmp_path / "throughput.json"
    command = [sys.executable, str(SCRIPT), "--sizes", "2e4", "--repeats", "1", "--dv-load-events", "2000",
               "--decode-events", "1e5", "--copy-mib", "4", "--bag", str(event_bag), "--raw", str(evt2_raw),
               "--output", str(output)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=os.environ.copy(), check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(output.read_text())
    headline = {key: value for key, value in summary.items() if key.endswith(("_mev_s", "_gb_s"))}
    assert len(headline) == 6  # the six keys: accumulate ours/dv/dv+load, decode, decode+accumulate, copy
    for key, value in headline.items():
        assert isinstance(value, float) and math.isfinite(value) and value > 0, key
    methods = [row["method"] for row in summary["details"]]
    # the decode rows ran on the real bag and on the real RAW recording, not on the synthetic fallback
    assert "(d) evt3 decode, real bag (payloads joined)" in methods
    assert "(d) faery evt.Decoder (Rust), bag as RAW file" in methods  # the peer, on the same bytes
    assert "(d'') evt3 decode, real events re-encoded" in methods
    assert any(m.startswith("(e'') evt3 decode + accumulate") for m in methods)
    assert sum(m.startswith("(f) evt3 decode, TIME_HIGH") for m in methods) == 3
    assert summary["sources"]["decode_accumulate_mev_s"] == "row (e) on bag (repeated)"
    real_bag_row = next(row for row in summary["details"] if row["method"].startswith("(d) evt3 decode, real bag"))
    assert real_bag_row["events"] == 343_474  # the bag's CD events, all decoded
    assert not [note for note in summary["notes"] if "skipped" in note]
