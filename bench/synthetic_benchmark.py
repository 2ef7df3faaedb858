"""MADM, DIFF and ICCLD vs source-only, with their ablations, on regenerable synthetic scenes (issues 6, 17, 18).

Calls ``python -m madm_train benchmark --suite synthetic`` (``madm_train.benchmark`` documents the
protocol) in a work folder, then copies what is committed — ``results.json``, ``results.md``, the
figures and the prior's record — into ``bench/results/synthetic_benchmark/``. The work folder keeps
data, prior and every run; a stopped benchmark continues from its finished runs. Each finished run's metrics
are also kept in ``bench/results/synthetic_benchmark/records/`` at once: committed, they let a benchmark of many
hours continue on another machine whose work folder is gone.

    scripts/in-env python bench/synthetic_benchmark.py                 # tiny preset, 2-core CPU
    scripts/in-env python bench/synthetic_benchmark.py --preset gpu    # larger, on one GPU
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMMITTED = ("results.json", "results.md", "figure_depth.png", "figure_thermal.png", "figure_events.png", "prior/prior.json")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny", help="tiny (CPU) or gpu")
    parser.add_argument("--work", type=Path, default=REPO / "build" / "synthetic_benchmark",
                        help="folder for data, prior and runs (default build/synthetic_benchmark)")
    parser.add_argument("--results", type=Path, default=REPO / "bench" / "results" / "synthetic_benchmark",
                        help="where the committed files are copied (default bench/results/synthetic_benchmark)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="training seeds (default: the preset's)")
    parser.add_argument("--variants", nargs="+", default=None, metavar="ROW",
                        help="table rows to run (default all; see python -m madm_train benchmark --help)")
    args = parser.parse_args()
    command = [sys.executable, "-m", "madm_train", "benchmark", "--suite", "synthetic", "--out", str(args.work),
               "--preset", args.preset, "--records", str(args.results / "records" / args.preset)]
    if args.seeds is not None:
        command += ["--seeds", *map(str, args.seeds)]
    if args.variants is not None:
        command += ["--variants", *args.variants]
    code = subprocess.call(command)
    if code != 0:
        return code
    args.results.mkdir(parents=True, exist_ok=True)
    for name in COMMITTED:
        if (args.work / name).is_file():
            shutil.copyfile(args.work / name, args.results / Path(name).name)
    print(f"copied results to {args.results}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
