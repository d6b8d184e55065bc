"""The batch state file in the output folder: which jobs are finished, queued (where, as which prompt) or failed.

Written whole to a temporary file and renamed over the old one (`os.replace` is atomic), so an interrupted
run (Ctrl-C, a kill, a power cut after the rename) always leaves either the previous or the new state, never a
mix. A job is finished when its record says so, its fingerprint (inputs, seed, settings, workflow) is the
current one, and every output file it lists is on disk with the recorded size.

A lock file beside it keeps two batch runs from writing into the same output folder at once.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

MANIFEST_NAME = "xdyna-batch.json"
LOCK_NAME = "xdyna-batch.lock"
VERSION = 1

PENDING, QUEUED, DONE, FAILED = "pending", "queued", "done", "failed"


class ManifestError(RuntimeError):
    """The output folder's state cannot be used (unreadable, or another batch run is writing into it)."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


class Manifest:
    """State of every job of the batch writing into `out_dir`; `save()` after each change."""

    def __init__(self, out_dir: Path, data: dict[str, Any]):
        self.out_dir = out_dir
        self.path = out_dir / MANIFEST_NAME
        self.data = data
        self._lock: Path | None = None

    @classmethod
    def open(cls, out_dir: str | Path) -> Manifest:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / MANIFEST_NAME
        data: dict[str, Any] = {"version": VERSION, "clients": {}, "jobs": {}}
        if path.exists():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except ValueError as err:
                raise ManifestError(
                    f"{path} is not valid JSON ({err}); move it away to start the batch afresh"
                ) from err
            if data.get("version") != VERSION:
                raise ManifestError(f"{path} has version {data.get('version')!r}, this tool writes {VERSION}")
            data.setdefault("clients", {})
            data.setdefault("jobs", {})
        return cls(out_dir, data)

    # --- lock -------------------------------------------------------------------------------------------

    def lock(self) -> None:
        """Claim the output folder; a lock left by a process that no longer runs is taken over."""
        path = self.out_dir / LOCK_NAME
        for _ in range(2):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                try:
                    owner = int(path.read_text().strip() or 0)
                except (OSError, ValueError):
                    owner = 0
                if owner and owner != os.getpid() and _pid_alive(owner):
                    raise ManifestError(
                        f"another batch run (process {owner}) is writing into {self.out_dir}; wait for it or stop it"
                    ) from None
                path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as f:
                f.write(str(os.getpid()))
            self._lock = path
            return
        raise ManifestError(f"could not take the lock {path}")

    def unlock(self) -> None:
        if self._lock is not None:
            self._lock.unlink(missing_ok=True)
            self._lock = None

    # --- records ----------------------------------------------------------------------------------------

    def job(self, name: str) -> dict[str, Any]:
        return self.data["jobs"].setdefault(name, {"status": PENDING, "failures": 0, "errors": []})

    def client_id(self, url: str, new_id: str) -> str:
        """The websocket client id used for `url` by this batch (kept across runs so queued prompts stay ours)."""
        return self.data["clients"].setdefault(url, new_id)

    def is_finished(self, name: str, fingerprint: str) -> bool:
        record = self.data["jobs"].get(name)
        if not record or record.get("status") != DONE or record.get("fingerprint") != fingerprint:
            return False
        for output in record.get("outputs", []):
            path = self.out_dir / output["file"]
            if not path.is_file() or path.stat().st_size != output["bytes"]:
                return False
        return bool(record.get("outputs"))

    def update(self, name: str, **fields: Any) -> dict[str, Any]:
        record = self.job(name)
        record.update(fields, updated=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        self.save()
        return record

    def save(self) -> None:
        text = json.dumps(self.data, indent=2, sort_keys=True)
        fd, tmp = tempfile.mkstemp(prefix=".xdyna-batch-", suffix=".tmp", dir=self.out_dir)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
