"""Which of the pack's model files are in ComfyUI's model folders, and fetching the missing ones.

Files are looked for in every folder ComfyUI searches for their kind, and downloaded with huggingface_hub into
the first of them: under ComfyUI's `models/` (or a configured folder), never into `custom_nodes/`. Offline,
the error names every file, where it comes from and the folder to put it in; without network it comes within
about `downloads.PROBE_TIMEOUT_S` seconds (see `downloads.probe_hub`).
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .downloads import HubUnreachableError, ModelFilesMissingError, hub_offline, probe_hub
from .weights_manifest import FOLDER_DEFAULTS, SIZE_TOLERANCE, WEIGHTS, WeightFile, WeightsError, human_size

logger = logging.getLogger("xdyna.weights")

STAGING = ".xdyna-download"  # inside the target folder, so the finished file is moved, not copied

OK, ALTERNATIVE, SIZE_DIFFERS, PARTIAL, MISSING = "ok", "alternative", "size differs", "partial", "missing"
PRESENT = (OK, ALTERNATIVE, SIZE_DIFFERS)


class WeightsMissingError(ModelFilesMissingError):
    """Files neither present nor downloaded; the message names each, its source and the folder it goes in."""

    def __init__(self, missing: Sequence[tuple[WeightFile, Path]], reason: str):
        self.missing = tuple(w.remote for w, _ in missing)
        self.targets = {w.key: folder for w, folder in missing}
        self.target_dir = Path(missing[0][1]) if missing else Path()
        lines = "; ".join(
            f"{w.local_name} from Hugging Face {w.repo_id} ({w.remote.url}) into {folder}" for w, folder in missing
        )
        FileNotFoundError.__init__(
            self,
            f"{len(missing)} model file(s) missing and not downloaded ({reason}): {lines}. Download them and put them there",
        )


class ModelFolders(Protocol):
    def paths(self, folder: str) -> list[Path]:
        """Folders searched for files of this kind, in ComfyUI's order; the first is where downloads go."""


@dataclass
class PlainFolders:
    """A models directory laid out as ComfyUI's default, plus extra folders per kind (searched first)."""

    models_dir: Path
    extra: dict[str, list[Path]] | None = None

    def paths(self, folder: str) -> list[Path]:
        return [*(self.extra or {}).get(folder, []), Path(self.models_dir) / FOLDER_DEFAULTS[folder]]


class ComfyFolders:
    """ComfyUI's own `folder_paths` (extra_model_paths.yaml included); the pack's folders added as the pack does."""

    def __init__(self, folder_paths):
        self.fp = folder_paths

    def paths(self, folder: str) -> list[Path]:
        if folder not in self.fp.folder_names_and_paths:
            self.fp.add_model_folder_path(folder, os.path.join(self.fp.models_dir, FOLDER_DEFAULTS[folder]))
        paths = [Path(p) for p in self.fp.get_folder_paths(folder)]
        default = Path(self.fp.models_dir) / FOLDER_DEFAULTS[folder]
        return paths if default in paths else [*paths, default]


@dataclass
class FileStatus:
    weight: WeightFile
    state: str
    path: Path | None
    size: int | None
    target: Path  # where a download goes

    @property
    def present(self) -> bool:
        return self.state in PRESENT


def _size_state(weight: WeightFile, size: int) -> str:
    if weight.exact_size:
        return OK if size == weight.size else PARTIAL if size < weight.size else SIZE_DIFFERS
    if size < weight.size * (1 - SIZE_TOLERANCE):
        return PARTIAL
    return SIZE_DIFFERS if size > weight.size * (1 + SIZE_TOLERANCE) else OK


def _find(folder: Path, name: str, depth: int = 2) -> Path | None:
    """`folder/name`, else the first `name` in subfolders up to `depth` levels (ComfyUI lists those too)."""
    direct = folder / name
    if direct.is_file():
        return direct
    if depth == 0 or not folder.is_dir():
        return None
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        found = _find(sub, name, depth - 1)
        if found is not None:
            return found
    return None


def check_file(weight: WeightFile, folders: ModelFolders) -> FileStatus:
    paths = folders.paths(weight.folder)
    best: FileStatus | None = None
    for folder in paths:
        found = _find(folder, weight.local_name)
        if found is not None:
            size = found.stat().st_size
            status = FileStatus(weight, _size_state(weight, size), found, size, paths[0])
            if status.state == OK:
                return status
            best = best or status
    for name in weight.alternatives:
        for folder in paths:
            found = _find(folder, name)
            if found is not None and found.stat().st_size > 0:
                return FileStatus(weight, ALTERNATIVE, found, found.stat().st_size, paths[0])
    return best or FileStatus(weight, MISSING, None, None, paths[0])


def check(folders: ModelFolders, weights: Iterable[WeightFile] = WEIGHTS) -> list[FileStatus]:
    return [check_file(w, folders) for w in weights]


def format_report(statuses: Sequence[FileStatus]) -> str:
    """A text report: every file with its state, where it is or where it goes, and what to do about gaps."""
    missing = [s for s in statuses if not s.present]
    lines = [
        f"X-Dyna weights: {len(statuses) - len(missing)} of {len(statuses)} present"
        + (f", {len(missing)} to fetch" if missing else "")
    ]
    for s in statuses:
        w = s.weight
        head = f"  {s.state.upper() if not s.present else s.state:<12} {w.local_name} ({human_size(w.size)}, {w.licence.split(' (')[0]})"
        if s.state == OK:
            lines.append(f"{head}: {s.path}")
        elif s.state == ALTERNATIVE:
            lines.append(f"{head}: using {s.path}")
        elif s.state == SIZE_DIFFERS:
            lines.append(f"{head}: {s.path} has {human_size(s.size)}, expected {human_size(w.size)}; kept as is")
        elif s.state == PARTIAL:
            lines.append(
                f"{head}: {s.path} has only {human_size(s.size)} (an interrupted download?); fetch again into {s.target}"
            )
        else:
            note = f" ({w.substitute})" if w.substitute else ""
            lines.append(f"{head}: not found; from {w.repo_id} {w.repo_path} into {s.target}{note}")
    if missing:
        lines.append(
            "Fetch them with `python -m xdyna_tools.weights download` (from the pack's folder) or the "
            "X-Dyna Check Weights node with download_missing on."
        )
    return "\n".join(lines)


def _refuse_custom_nodes(target: Path) -> None:
    if "custom_nodes" in Path(target).resolve().parts:
        raise WeightsError(
            f"refusing to download into {target}: model files belong under ComfyUI's models/, not custom_nodes/"
        )


def _hub_download(weight: WeightFile, staging: Path) -> Path:
    import huggingface_hub

    probe_hub(weight.remote)  # without network: a clear error within PROBE_TIMEOUT_S, not minutes of retries
    logger.info(
        "X-Dyna: downloading %s (%s) from Hugging Face %s", weight.repo_path, human_size(weight.size), weight.repo_id
    )
    return Path(
        huggingface_hub.hf_hub_download(repo_id=weight.repo_id, filename=weight.repo_path, local_dir=str(staging))
    )


def download(
    folders: ModelFolders,
    weights: Iterable[WeightFile] = WEIGHTS,
    downloader: Callable[[WeightFile, Path], Path] | None = None,
    on_file: Callable[[int, int], None] | None = None,
) -> list[FileStatus]:
    """Download every missing or partial file into the first folder of its kind; returns the statuses after.

    Each file is fetched into a staging folder inside its target folder and then renamed to its ComfyUI name,
    so no half-written file ever carries that name. `on_file(done, total)` is called before each file.

    Raises:
        WeightsMissingError: offline, huggingface_hub absent, or a download failed (every file is tried first,
            unless the endpoint does not answer: then within about PROBE_TIMEOUT_S seconds).
    """
    statuses = check(folders, weights)
    todo = [s for s in statuses if s.state in (MISSING, PARTIAL)]
    for s in todo:
        _refuse_custom_nodes(s.target)
    if not todo:
        return statuses
    if downloader is None:
        try:
            import huggingface_hub  # noqa: F401
        except ImportError as err:
            raise WeightsMissingError([(s.weight, s.target) for s in todo], "huggingface_hub is not installed") from err
        if hub_offline():
            raise WeightsMissingError(
                [(s.weight, s.target) for s in todo], "Hugging Face downloads are off: HF_HUB_OFFLINE is set"
            )
        downloader = _hub_download
    failures: list[tuple[FileStatus, str]] = []
    unreachable = ""
    for i, s in enumerate(todo):
        if on_file is not None:
            on_file(i, len(todo))
        staging = s.target / STAGING
        try:
            s.target.mkdir(parents=True, exist_ok=True)
            fetched = Path(downloader(s.weight, staging))
            size = fetched.stat().st_size
            if s.weight.exact_size and size != s.weight.size:
                raise OSError(f"got {size} bytes, expected {s.weight.size}")
            os.replace(fetched, s.target / s.weight.local_name)
            logger.info("X-Dyna: %s is in %s", s.weight.local_name, s.target)
        except HubUnreachableError as err:  # no network: the files after it would each wait as long again
            unreachable = str(err)
            failures.extend((t, "") for t in todo[i:])
            break
        except Exception as err:  # offline, no route, HTTP errors, disk full: each ends in the same advice
            failures.append((s, f"{s.weight.local_name}: {type(err).__name__}: {err}".split("\n")[0]))
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    if on_file is not None:
        on_file(len(todo), len(todo))
    if failures:
        messages = "; ".join(m for _, m in failures if m)
        reason = "; ".join(filter(None, [unreachable, messages and f"download failed; {messages}"]))
        raise WeightsMissingError([(s.weight, s.target) for s, _ in failures], reason)
    return check(folders, weights)
