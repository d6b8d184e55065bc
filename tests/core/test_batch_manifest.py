"""The batch state file: atomic writes, what counts as finished, one run per output folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import xdyna_tools.manifest as manifest_module
from xdyna_tools.manifest import DONE, LOCK_NAME, MANIFEST_NAME, QUEUED, Manifest, ManifestError


def finished(out, name="alice", fingerprint="fp1", data=b"video"):
    m = Manifest.open(out)
    (out / name).mkdir(exist_ok=True)
    (out / name / "v.mp4").write_bytes(data)
    m.update(name, status=DONE, fingerprint=fingerprint, outputs=[{"file": f"{name}/v.mp4", "bytes": len(data)}])
    return m


def test_a_job_is_finished_only_with_its_fingerprint_and_its_files_on_disk(tmp_path):
    m = finished(tmp_path)
    assert Manifest.open(tmp_path).is_finished("alice", "fp1")
    assert not m.is_finished("alice", "fp2"), "changed inputs or settings must run the job again"
    assert not m.is_finished("bob", "fp1")
    (tmp_path / "alice" / "v.mp4").write_bytes(b"vid")  # truncated
    assert not m.is_finished("alice", "fp1")
    (tmp_path / "alice" / "v.mp4").unlink()
    assert not m.is_finished("alice", "fp1")
    m.update("carol", status=QUEUED, fingerprint="fp1", prompt_id="p")
    assert not m.is_finished("carol", "fp1")


def test_saves_are_atomic_a_failed_write_keeps_the_previous_state(tmp_path, monkeypatch):
    m = finished(tmp_path)
    before = (tmp_path / MANIFEST_NAME).read_text()

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(manifest_module.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        m.update("bob", status=QUEUED)
    assert (tmp_path / MANIFEST_NAME).read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alice", MANIFEST_NAME]  # no temporary file left


def test_an_unreadable_state_file_is_reported_not_overwritten(tmp_path):
    (tmp_path / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        Manifest.open(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text(json.dumps({"version": 99}))
    with pytest.raises(ManifestError, match="version 99"):
        Manifest.open(tmp_path)


def test_one_run_per_output_folder_and_stale_locks_are_taken_over(tmp_path):
    m = Manifest.open(tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (tmp_path / LOCK_NAME).write_text(str(holder.pid))
        with pytest.raises(ManifestError, match=f"another batch run \\(process {holder.pid}\\)"):
            m.lock()
    finally:
        holder.kill()
        holder.wait()
    m.lock()  # the holder is gone: its lock is stale
    assert (tmp_path / LOCK_NAME).read_text() == str(os.getpid())
    m.unlock()
    assert not (tmp_path / LOCK_NAME).exists()


def test_client_ids_are_kept_per_server(tmp_path):
    m = Manifest.open(tmp_path)
    assert m.client_id("http://a", "x1") == "x1"
    assert m.client_id("http://a", "x2") == "x1"
    m.save()
    assert Manifest.open(tmp_path).client_id("http://a", "x3") == "x1"
