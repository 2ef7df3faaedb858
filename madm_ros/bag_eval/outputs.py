"""The ``--out`` folder's policy: refuse what is not ours, stage every output, swap it in whole or not at all.

Why: an evaluation folder is evidence (a report someone links, a bag someone plays into RViz), so
a new run must neither mix its files with an older run's (plots of an earlier labelled run beside
an unlabelled report) nor destroy a good report when it fails. So:

- a folder that is not empty is refused unless ``--overwrite``; even then only what bag_eval
  wrote there (listed in its manifest, :data:`MANIFEST`) is replaced, and an entry we would write
  that the manifest does not list (someone's own ``output_bag/``) is refused; other files stay;
- the run writes into a staging folder inside ``--out`` and, only when it succeeded,
  :meth:`OutputFolder.commit` swaps the staged entries in, after removing the previous run's
  entries: the manifest, written first, lists both while the swap runs, so an interrupted swap
  still leaves every file accounted for;
- a write that fails (read-only folder, disk full) raises :class:`OutputWriteError` after
  :meth:`OutputFolder.discard` removed the staging folder, so the folder is as it was before;
- a run that ends any other way than successfully neither replaces the earlier report nor loses
  what it evaluated: :meth:`OutputFolder.set_aside` moves its staging folder, whole, to
  :data:`INTERRUPTED` (``OUT/interrupted/``, Ctrl-C) or :data:`FAILED` (``OUT/failed/``, an error
  part way, a bag that broke off, no label that could be scored), and the manifest lists that
  beside the earlier run's entries, which stay byte for byte; the next ``--overwrite`` run that
  succeeds replaces it like any other output of bag_eval.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path

from madm_ros.errors import ConfigError, MadmError

__all__ = ["FAILED", "INTERRUPTED", "MANIFEST", "OUR_NAMES", "OutputFolder", "OutputWriteError"]

MANIFEST = ".bag_eval.json"
"""The file in ``--out`` that lists the entries bag_eval wrote there (its top-level names)."""
INTERRUPTED = "interrupted"
"""The entry in ``--out`` that holds the partial output of a run stopped with Ctrl-C (:meth:`OutputFolder.set_aside`)."""
FAILED = "failed"
"""The entry in ``--out`` that holds the output of a run that ended with an error (:meth:`OutputFolder.set_aside`)."""
SET_ASIDE = (INTERRUPTED, FAILED)
OUR_NAMES = ("report.json", "report.md", "iou.png", "confusion.png", "latency.png", "overlays.png", "overlays",
             "output_bag", *SET_ASIDE)
"""Every top-level entry a run may write."""
STAGING_PREFIX = ".bag_eval.partial-"


class OutputWriteError(MadmError):
    """An output could not be written (read-only folder, disk full); the run's partial output is removed."""


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


class OutputFolder:
    """The ``--out`` folder of one run.

    Args:
        path: The folder (created when the run starts writing, if missing).
        overwrite: Replace bag_eval's own earlier outputs there.

    Raises:
        ConfigError: ``path`` is a file, a non-empty folder without ``overwrite``, or holds an entry
            bag_eval would write but did not write (checked here, before anything is written).
    """

    def __init__(self, path: Path, overwrite: bool) -> None:
        self.path = Path(path)
        self.overwrite = overwrite
        self.staging: Path | None = None
        self._created = False
        self.previous: list[str] = []
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(f"--out {self.path} is a file; give a folder")
        entries = sorted(p.name for p in self.path.iterdir()) if self.path.is_dir() else []
        if entries and not overwrite:
            raise ConfigError(f"output folder {self.path} is not empty; choose another --out, or pass --overwrite to "
                              f"replace what bag_eval wrote there (listed in {MANIFEST})")
        self.previous = self._read_manifest() if entries else []
        foreign = [n for n in OUR_NAMES if n in entries and n not in self.previous]
        if foreign:
            raise ConfigError(f"{self.path / foreign[0]} was not written by bag_eval (not listed in "
                              f"{self.path / MANIFEST}); move it away or choose another --out")

    def _read_manifest(self) -> list[str]:
        """Top-level names of the previous run's outputs; a missing or unreadable manifest lists none."""
        try:
            names = json.loads((self.path / MANIFEST).read_text()).get("paths", [])
        except (OSError, ValueError, AttributeError):
            return []
        return [n for n in names if isinstance(n, str) and n not in ("", ".", "..", MANIFEST) and Path(n).name == n]

    def start(self) -> Path:
        """Create the folder and a staging folder inside it; returns the staging folder.

        Raises:
            OutputWriteError: the folder cannot be created or written.
        """
        try:
            if not self.path.exists():
                self.path.mkdir(parents=True)
                self._created = True
            if self.overwrite:  # staging folders of runs that were killed
                for stale in self.path.glob(f"{STAGING_PREFIX}*"):
                    _remove(stale)
            self.staging = self.path / f"{STAGING_PREFIX}{os.getpid()}"
            _remove(self.staging)
            self.staging.mkdir()
        except OSError as error:
            self.discard()
            raise OutputWriteError(f"cannot write to output folder {self.path}: {error.strerror or error}; "
                                   "choose a writable --out") from None
        return self.staging

    def commit(self) -> list[str]:
        """Swap the staged entries into the folder, replacing the previous run's; returns the names written.

        Raises:
            OutputWriteError: a write failed (the staged entries are removed; entries already swapped
                in are listed in the manifest, so ``--overwrite`` can clean up).
        """
        assert self.staging is not None, "start() first"
        written = sorted(p.name for p in self.staging.iterdir() if p.name in OUR_NAMES)
        try:
            self._write_manifest(sorted(set(self.previous) | set(written)))
            for name in self.previous:
                if name not in written:
                    _remove(self.path / name)
            for name in written:
                target = self.path / name
                if target.is_dir() and not target.is_symlink():
                    shutil.rmtree(target)
                os.replace(self.staging / name, target)
            self._write_manifest(written)
        except OSError as error:
            self.discard()
            raise OutputWriteError(f"cannot write to output folder {self.path}: {error.strerror or error}; "
                                   "free space or choose a writable --out") from None
        with contextlib.suppress(OSError):
            shutil.rmtree(self.staging)
        self.previous, self.staging = written, None
        return written

    def set_aside(self, name: str = INTERRUPTED) -> Path:
        """Move the staging folder, whole, to ``name`` (:data:`INTERRUPTED` or :data:`FAILED`); returns its path.

        For a run that did not succeed: what it wrote is kept where it cannot be mistaken for a
        finished report, and the previous run's entries stay byte for byte (only the manifest gains
        ``name``). An older entry of that name is replaced (it is bag_eval's: a foreign one was
        refused when the run started).

        Raises:
            OutputWriteError: the move failed (the staging folder is removed).
        """
        assert self.staging is not None, "start() first"
        assert name in SET_ASIDE, name
        target = self.path / name
        kept = sorted({*self.previous, name})
        try:
            self._write_manifest(kept)
            _remove(target)
            os.replace(self.staging, target)
        except OSError as error:
            self.discard()
            raise OutputWriteError(f"cannot write to output folder {self.path}: {error.strerror or error}; "
                                   "free space or choose a writable --out") from None
        self.previous, self.staging = kept, None
        return target

    def discard(self) -> None:
        """Remove this run's staging folder, and the folder itself if the run created it and it is empty."""
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)
            self.staging = None
        if self._created:
            with contextlib.suppress(OSError):
                self.path.rmdir()

    def _write_manifest(self, names: list[str]) -> None:
        from madm_ros import atomic_io

        text = json.dumps({"tool": "python -m madm_ros.bag_eval", "paths": names}, indent=1) + "\n"
        atomic_io.atomic_write_bytes(self.path / MANIFEST, text.encode())
