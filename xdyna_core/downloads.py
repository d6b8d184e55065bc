"""Model files fetched on first use from Hugging Face, into a model folder the caller names.

Files are looked for in every folder given (ComfyUI's registered folders, `extra_model_paths.yaml` included)
and downloaded only when missing, into the folder the caller chooses (under ComfyUI's `models/`, never into
the pack's own directory). Offline (`HF_HUB_OFFLINE=1`, no network, or huggingface_hub absent) the error names
every missing file, where it comes from and the exact folder to put it in. Without network that error comes
within `PROBE_TIMEOUT_S` seconds: the endpoint is asked once, without retries, before each download
(huggingface_hub alone retries every file for over a minute), and an endpoint that does not answer ends the
attempt for the files after it.
"""

from __future__ import annotations

import logging
import os
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger("xdyna")

HUB = "https://huggingface.co"
PROBE_TIMEOUT_S = 10.0  # how long the Hub may take to answer one request before we call it unreachable


@dataclass(frozen=True)
class RemoteFile:
    """A file of a Hugging Face model repository."""

    repo_id: str
    filename: str

    @property
    def url(self) -> str:
        """The file's download address (`resolve`, the file itself; `blob` would be its HTML page)."""
        return f"{HUB}/{self.repo_id}/resolve/main/{self.filename}"


class ModelFilesMissingError(FileNotFoundError):
    """Model files are neither on disk nor downloadable; the message says what to put where."""

    def __init__(self, missing: Sequence[RemoteFile], target_dir: Path, reason: str):
        self.missing = tuple(missing)
        self.target_dir = Path(target_dir)
        lines = "; ".join(f"{f.filename} from Hugging Face {f.repo_id} ({f.url})" for f in self.missing)
        super().__init__(
            f"{len(self.missing)} model file(s) missing and not downloaded ({reason}): {lines}. "
            f"Download them and put them in {self.target_dir}"
        )


def find_model_file(filename: str, folders: Sequence[Path]) -> Path | None:
    for folder in folders:
        path = Path(folder) / filename
        if path.is_file() and path.stat().st_size > 0:
            return path
    return None


def hub_offline() -> bool:
    """Whether huggingface_hub is in offline mode (it reads `HF_HUB_OFFLINE` once, at import)."""
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}
    return env or bool(getattr(constants, "HF_HUB_OFFLINE", False))


def hub_endpoint() -> str:
    """Where huggingface_hub downloads from: `HF_ENDPOINT` (a mirror) or the Hub itself."""
    try:
        from huggingface_hub import constants

        return str(getattr(constants, "ENDPOINT", HUB)).rstrip("/")
    except ImportError:
        return os.environ.get("HF_ENDPOINT", HUB).rstrip("/")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # a redirect is an answer: the endpoint is reachable


def hub_unreachable(file: RemoteFile, timeout: float | None = None) -> str | None:
    """Why `file` cannot be fetched from the endpoint now (no answer within `timeout` s, default
    `PROBE_TIMEOUT_S`), or None if it answers.

    One HEAD request, without huggingface_hub's retries; any HTTP answer counts as reachable (a wrong name or
    a gated repository is reported by the download itself). Proxies from the environment are used.
    """
    timeout = PROBE_TIMEOUT_S if timeout is None else timeout
    url = f"{hub_endpoint()}/{file.repo_id}/resolve/main/{file.filename}"
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(urllib.request.Request(url, method="HEAD"), timeout=timeout):
            return None
    except urllib.error.HTTPError:
        return None
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        return f"{hub_endpoint()} did not answer within {timeout:g} s ({type(reason).__name__}: {reason}); no network?"


class HubUnreachableError(ConnectionError):
    """The download endpoint did not answer; the message says which and how long we waited."""


def probe_hub(file: RemoteFile, timeout: float | None = None) -> None:
    """Raise `HubUnreachableError` unless the endpoint answers for `file` within `timeout` s (`PROBE_TIMEOUT_S`)."""
    reason = hub_unreachable(file, timeout)
    if reason:
        raise HubUnreachableError(reason)


def _download(file: RemoteFile, target_dir: Path) -> Path:
    from huggingface_hub import hf_hub_download

    probe_hub(file)
    logger.info("X-Dyna: downloading %s from Hugging Face %s into %s", file.filename, file.repo_id, target_dir)
    return Path(hf_hub_download(repo_id=file.repo_id, filename=file.filename, local_dir=str(target_dir)))


def ensure_model_files(
    files: Sequence[RemoteFile], target_dir: str | Path, search_dirs: Sequence[str | Path] = (), download: bool = True
) -> list[Path]:
    """Paths of `files`, downloading the missing ones into `target_dir`.

    Args:
        files: the files needed.
        target_dir: where missing files are downloaded to (created when a download starts), and searched last.
        search_dirs: further folders where the files may already be.
        download: False to never touch the network.

    Raises:
        ModelFilesMissingError: some files are neither present nor downloadable.
    """
    target_dir = Path(target_dir)
    folders = [Path(d) for d in search_dirs] + [target_dir]
    found = {f: find_model_file(f.filename, folders) for f in files}
    missing = [f for f, path in found.items() if path is None]
    if missing and not download:
        raise ModelFilesMissingError(missing, target_dir, "downloads are turned off")
    if missing:
        try:
            import huggingface_hub  # noqa: F401
        except ImportError as err:
            raise ModelFilesMissingError(missing, target_dir, "huggingface_hub is not installed") from err
        if hub_offline():
            raise ModelFilesMissingError(missing, target_dir, "Hugging Face downloads are off: HF_HUB_OFFLINE is set")
        failures: list[str] = []
        for f in missing:
            try:
                found[f] = _download(f, target_dir)
            except Exception as err:  # offline, no route, HTTP errors, disk full: all end in the same advice
                failures.append(f"{f.filename}: {type(err).__name__}: {err}".split("\n")[0])
                if isinstance(err, HubUnreachableError):
                    break  # no network: the other files would each wait as long again
        still_missing = [f for f in files if found[f] is None]
        if still_missing:
            raise ModelFilesMissingError(still_missing, target_dir, "download failed; " + "; ".join(failures))
    return [found[f] for f in files]
