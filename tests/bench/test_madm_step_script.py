"""bench/madm_step.py at the tiny preset: every row in its own process, figures or a reason, finished rows kept."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.madm_step import DEFAULT_ROWS, parse_row, row_spec

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bench" / "madm_step.py"


def run(tmp_path: Path, *rows: str) -> dict:
    output = tmp_path / "step.json"
    command = [sys.executable, str(SCRIPT), "--preset", "tiny", "--device", "cpu", "--rows", *rows, "--iterations", "1",
               "--warmup", "1", "--work", str(tmp_path / "work"), "--output", str(output)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(output.read_text())


@pytest.mark.slow
def test_rows_are_measured_in_their_own_processes_and_kept_for_the_next_call(tmp_path: Path) -> None:
    report = run(tmp_path, "madm:full:fp32:off:64", "madm:lora:fp32:on:64", "madm:full:fp16:off:64", "diff:frozen:fp32:off:64:1")
    rows = {(r["finetune"], r["amp"]): r for r in report["rows"]}
    full, lora, fp16, diff = rows["full", "fp32"], rows["lora", "fp32"], rows["full", "fp16"], rows["frozen", "fp32"]
    assert (diff["method"], diff["steps"]) == ("diff", 1)
    for row in (full, lora, diff):
        assert set(row) >= {"method", "finetune", "amp", "checkpointing", "crop", "seconds_per_iteration", "peak_rss_gb",
                            "trainable_params"}
        assert row["seconds_per_iteration"] > 0 and row["peak_rss_gb"] > 0
    assert lora["trainable_params"] < full["trainable_params"]  # adapters, projections, prompt and head only
    assert diff["trainable_params"] < full["trainable_params"]  # DIFF: fusion and head, the UNet frozen
    assert fp16["seconds_per_iteration"] is None and "needs CUDA" in fp16["reason"]
    again = run(tmp_path, "madm:full:fp32:off:64")  # kept, not re-measured
    assert [r for r in again["rows"] if r["finetune"] == "full" and r["amp"] == "fp32"] == [full]


def test_iccld_rows_name_their_stage_and_stage_one_refuses_checkpointing() -> None:
    assert parse_row("iccld:1:bf16:off:256") == {"method": "iccld", "stage": 1, "amp": "bf16", "checkpointing": False,
                                                 "crop": 256}
    assert parse_row("iccld:2:fp32:on:512") == {"method": "iccld", "stage": 2, "amp": "fp32", "checkpointing": True,
                                                "crop": 512}
    for rows in DEFAULT_ROWS.values():  # every default row parses and prints back as written
        assert {parse_row(r)["method"] for r in rows} == {"madm", "diff", "iccld"}
        assert [row_spec(parse_row(r)) for r in rows] == rows
    for bad in ("iccld:1:bf16:on:256", "iccld:3:bf16:off:256", "iccld:full:bf16:off:256", "iccld:2:bf16:off:100",
                "iccld:2:bf16:off:256:5", "madm:1:bf16:off:256", "madm:full:fp32:off:0"):
        with pytest.raises(SystemExit, match="bad row"):
            parse_row(bad)


@pytest.mark.slow
def test_an_iccld_stage_two_row_starts_from_a_stage_one_model_built_in_its_run_folder(tmp_path: Path) -> None:
    report = run(tmp_path, "iccld:2:fp32:on:64")
    [row] = report["rows"]
    assert (row["method"], row["stage"], row["checkpointing"]) == ("iccld", 2, True)
    assert row["seconds_per_iteration"] > 0 and row["peak_rss_gb"] > 0
    assert row["trainable_params"] > row["adversary_params"] > 0  # ε_θ in AdamW; the discriminator in its own Adam
    # each row names the machine and load of its own sitting (rows kept from other sittings may differ)
    assert row["device"] == report["device"] and row["contended"] == report["machine"]["load"]["contended"]
