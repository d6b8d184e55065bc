"""Batch jobs: (reference image, driving video) pairs, from a folder matched by file stem or from a list file.

A list file is CSV (a header row) or JSON (a list of objects, or `{"jobs": [...]}`). Each job has `reference`
and `driving` paths (relative to the list file's folder), and optionally `name`, `seed` and `overrides`
(a JSON object, or further CSV columns / JSON keys named `NODE.input`, see `workflow.apply_overrides`).
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger("xdyna.batch")

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"})
VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".webm", ".mkv", ".avi", ".m4v", ".gif"})
RESERVED_KEYS = frozenset({"name", "reference", "driving", "seed", "overrides"})
MAX_SEED = 0xFFFFFFFFFFFFFFFF


class BatchInputError(ValueError):
    """The job list or input folder cannot be turned into jobs; the message says which entry and why."""


@dataclass
class Job:
    """One generation: a reference image animated by a driving video, with its own seed and setting overrides."""

    name: str
    reference: Path
    driving: Path
    seed: int | None = None
    overrides: dict[str, Any] = field(default_factory=dict)


def safe_name(text: str) -> str:
    """A job name usable as a folder name and a ComfyUI filename prefix."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")
    return cleaned or "job"


def derived_seed(name: str) -> int:
    """A stable seed from the job name, so re-runs and resumed runs reproduce the same video."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big")


def job_seed(job: Job, base_seed: int | None) -> int:
    """The job's own seed, else the batch-wide `--seed`, else one derived from the job name."""
    if job.seed is not None:
        return job.seed
    return base_seed if base_seed is not None else derived_seed(job.name)


def _files_by_stem(folder: Path) -> dict[str, dict[str, list[Path]]]:
    found: dict[str, dict[str, list[Path]]] = {}
    candidates = [p for p in folder.iterdir()]
    candidates += [
        p for sub in folder.iterdir() if sub.is_dir() and not sub.name.startswith(".") for p in sub.iterdir()
    ]
    for path in sorted(candidates):
        if not path.is_file() or path.name.startswith("."):
            continue
        suffix = path.suffix.lower()
        kind = "image" if suffix in IMAGE_EXTENSIONS else "video" if suffix in VIDEO_EXTENSIONS else None
        if kind is not None:
            found.setdefault(path.stem, {"image": [], "video": []})[kind].append(path)
    return found


def pair_folder(folder: str | Path) -> list[Job]:
    """Jobs from a folder (and its direct subfolders): an image and a video with the same stem make one job.

    `alice.png` + `alice.mp4`, or `reference/alice.png` + `driving/alice.mp4`, become the job `alice`.
    Files without a partner are reported and skipped; two images or two videos for one stem are an error.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise BatchInputError(f"{folder} is not a folder")
    jobs = []
    for stem, kinds in _files_by_stem(folder).items():
        images, videos = kinds["image"], kinds["video"]
        if len(images) > 1 or len(videos) > 1:
            clash = images if len(images) > 1 else videos
            raise BatchInputError(
                f"the stem {stem!r} has {len(clash)} files of one kind ({', '.join(map(str, clash))}); "
                f"keep one image and one video per stem"
            )
        if not images or not videos:
            lone = (images or videos)[0]
            logger.warning(
                "X-Dyna batch: %s has no %s with the same stem; skipped", lone, "video" if images else "image"
            )
            continue
        jobs.append(Job(safe_name(stem), images[0], videos[0]))
    if not jobs:
        raise BatchInputError(f"no image/video pairs with matching stems in {folder}")
    return unique_names(jobs)


def _parse_cell(value: str) -> Any:
    """A CSV cell as JSON when it parses (numbers, booleans, lists), else the text itself."""
    try:
        return json.loads(value)
    except ValueError:
        return value


def _job_from_entry(entry: dict[str, Any], base: Path, where: str) -> Job:
    missing = [k for k in ("reference", "driving") if not entry.get(k)]
    if missing:
        raise BatchInputError(f"{where}: no {' and no '.join(missing)} given")
    paths = []
    for key in ("reference", "driving"):
        path = Path(str(entry[key])).expanduser()
        path = path if path.is_absolute() else base / path
        if not path.is_file():
            raise BatchInputError(f"{where}: the {key} file {path} does not exist")
        paths.append(path)
    seed = entry.get("seed")
    if seed not in (None, ""):
        try:
            seed = int(seed)
        except (TypeError, ValueError) as err:
            raise BatchInputError(f"{where}: seed {entry['seed']!r} is not an integer") from err
        if not 0 <= seed <= MAX_SEED:
            raise BatchInputError(f"{where}: seed {seed} is outside 0..{MAX_SEED}")
    else:
        seed = None
    overrides = entry.get("overrides") or {}
    if not isinstance(overrides, dict):
        raise BatchInputError(f"{where}: overrides must be an object of 'NODE.input': value")
    overrides = dict(overrides)
    overrides.update({k: v for k, v in entry.items() if k not in RESERVED_KEYS and v not in (None, "")})
    name = entry.get("name")
    if not name:
        ref, drv = paths[0].stem, paths[1].stem
        name = ref if ref == drv else f"{ref}__{drv}"
    return Job(safe_name(str(name)), paths[0], paths[1], seed, overrides)


def read_job_list(path: str | Path) -> list[Job]:
    """Jobs from a CSV or JSON list file (see the module docstring for the columns/keys)."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        with open(path, newline="", encoding="utf-8") as f:
            rows = [
                {k.strip(): (v.strip() if isinstance(v, str) else v) for k, v in row.items() if k}
                for row in csv.DictReader(f)
            ]
        entries = [
            {k: (_parse_cell(v) if k not in ("reference", "driving", "name") and v else v) for k, v in r.items()}
            for r in rows
        ]
    elif path.suffix.lower() == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        entries = data.get("jobs") if isinstance(data, dict) else data
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise BatchInputError(f'{path}: expected a JSON list of job objects (or {{"jobs": [...]}})')
    else:
        raise BatchInputError(f"{path}: a job list must be a .csv or .json file")
    jobs = [_job_from_entry(entry, path.parent, f"{path.name} entry {i + 1}") for i, entry in enumerate(entries)]
    if not jobs:
        raise BatchInputError(f"{path} lists no jobs")
    return unique_names(jobs)


def unique_names(jobs: list[Job]) -> list[Job]:
    """Suffix repeated job names with -2, -3, ... (each job writes into a folder of its name)."""
    seen: dict[str, int] = {}
    for job in jobs:
        count = seen.get(job.name, 0) + 1
        seen[job.name] = count
        if count > 1:
            job.name = f"{job.name}-{count}"
    return jobs


def load_jobs(source: str | Path) -> list[Job]:
    """Jobs from a folder of pairs or a CSV/JSON list file."""
    source = Path(source)
    if source.is_dir():
        return pair_folder(source)
    if source.is_file():
        return read_job_list(source)
    raise BatchInputError(f"{source} is neither a folder of pairs nor a .csv/.json job list")
