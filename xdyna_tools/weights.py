"""The model files X-Dyna for ComfyUI needs: source, size, licence and ComfyUI model folder of each; check and download.

    python -m xdyna_tools.weights list
    python -m xdyna_tools.weights check    [--comfyui PATH | --models-dir PATH] [--extra-model-paths YAML ...]
    python -m xdyna_tools.weights download [--comfyui PATH | --models-dir PATH] [--only KEY ...] [--skip KEY ...]

Files are looked for in every folder ComfyUI searches for their kind (with `--comfyui`, ComfyUI's own
`folder_paths` is loaded from the checkout and its `extra_model_paths.yaml` applied, as ComfyUI does at start),
and downloaded with huggingface_hub into the first of them: under ComfyUI's `models/` (or a configured
folder), never into `custom_nodes/`. Offline, the error names every file, where it comes from and the folder to
put it in. Sizes and licences were read from the Hugging Face repositories (Git LFS pointers where exact).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .cli import say

try:
    from ..xdyna_core.downloads import ModelFilesMissingError, RemoteFile, hub_offline
except ImportError:  # a top-level package: `python -m xdyna_tools.weights` from the pack, or installed by pip
    from xdyna_core.downloads import ModelFilesMissingError, RemoteFile, hub_offline

logger = logging.getLogger("xdyna.weights")

GB, MB = 1_000_000_000, 1_000_000  # Hugging Face states sizes in SI units
SIZE_TOLERANCE = 0.01  # for sizes known to three digits only
STAGING = ".xdyna-download"  # inside the target folder, so the finished file is moved, not copied


@dataclass(frozen=True)
class WeightFile:
    """One file the pack needs: where it comes from and where ComfyUI looks for it."""

    key: str
    description: str
    repo_id: str
    repo_path: str
    local_name: str
    folder: str  # ComfyUI model folder name (folder_paths), see FOLDER_DEFAULTS
    size: int  # bytes
    exact_size: bool
    licence: str
    used_by: str
    alternatives: tuple[str, ...] = ()  # other names that serve (a converted or renamed copy); size not checked
    substitute: str = ""  # when any file of a kind serves, says so

    @property
    def remote(self) -> RemoteFile:
        return RemoteFile(self.repo_id, self.repo_path)


XDYNA_LICENCE = "MIT (model card of Boese0601/X-Dyna; the X-Dyna code is Apache-2.0)"

WEIGHTS: tuple[WeightFile, ...] = (
    WeightFile(
        "unet", "X-Dyna UNet (SD1.5 UNet, Dynamics-Adapter, IP-Adapter k/v, motion modules)",
        "Boese0601/X-Dyna", "unet-checkpoint-epoch-5.ckpt", "unet-checkpoint-epoch-5.ckpt", "xdyna",
        5_290_000_000, False, XDYNA_LICENCE, "XDyna_LoadModel",
        alternatives=("unet-checkpoint-epoch-5.safetensors",),
    ),
    WeightFile(
        "pose_controlnet", "pose ControlNet", "Boese0601/X-Dyna", "controlnet-checkpoint-epoch-5.ckpt",
        "controlnet-checkpoint-epoch-5.ckpt", "controlnet", 1_450_000_000, False, XDYNA_LICENCE,
        "XDyna_LoadControlNet → XDyna_ApplyControlNets", alternatives=("controlnet-checkpoint-epoch-5.safetensors",),
    ),
    WeightFile(
        "face_controlnet", "S-Face ControlNet (6-channel hint)", "Boese0601/X-Dyna",
        "controlnet-face-checkpoint-epoch-2.ckpt", "controlnet-face-checkpoint-epoch-2.ckpt", "controlnet",
        1_450_000_000, False, XDYNA_LICENCE, "XDyna_LoadControlNet → XDyna_ApplyControlNets",
        alternatives=("controlnet-face-checkpoint-epoch-2.safetensors",),
    ),
    WeightFile(
        "ip_adapter", "IP-Adapter-plus SD1.5 (image projection)", "h94/IP-Adapter", "models/ip-adapter-plus_sd15.bin",
        "ip-adapter-plus_sd15.bin", "ipadapter", 158_033_179, True, "Apache-2.0", "XDyna_LoadReference",
        alternatives=("ip-adapter-plus_sd15.safetensors",),
    ),
    WeightFile(
        "clip_vision", "CLIP ViT-H/14 image encoder (IP-Adapter's)", "h94/IP-Adapter", "models/image_encoder/model.safetensors",
        "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors", "clip_vision", 2_528_373_448, True, "Apache-2.0",
        "core Load CLIP Vision → XDyna_LoadReference",
    ),
    WeightFile(
        "dwpose_detector", "DWPose person detector (YOLOX-L)", "yzd-v/DWPose", "yolox_l.onnx", "yolox_l.onnx",
        "xdyna_dwpose", 216_746_733, True, "Apache-2.0", "XDyna_DWPoseExtractor (downloads it on first use too)",
    ),
    WeightFile(
        "dwpose_estimator", "DWPose whole-body keypoints (DW-LL UCOCO 384)", "yzd-v/DWPose", "dw-ll_ucoco_384.onnx",
        "dw-ll_ucoco_384.onnx", "xdyna_dwpose", 134_399_116, True, "Apache-2.0",
        "XDyna_DWPoseExtractor (downloads it on first use too)",
    ),
    WeightFile(
        "sd15", "Stable Diffusion 1.5 (its VAE and text encoder)", "Comfy-Org/stable-diffusion-v1-5-archive",
        "v1-5-pruned-emaonly.safetensors", "v1-5-pruned-emaonly.safetensors", "checkpoints",
        4_270_000_000, False, "CreativeML OpenRAIL-M", "core Load Checkpoint (VAE, CLIP)",
        alternatives=("v1-5-pruned-emaonly-fp16.safetensors", "v1-5-pruned-emaonly.ckpt", "v1-5-pruned.safetensors"),
        substitute="any SD1.5 checkpoint serves; the example workflows name this one",
    ),
)  # fmt: skip

# Where each folder lies under ComfyUI's models/ when nothing else is configured (nodes/comfy_glue.py registers
# xdyna, ipadapter and xdyna_dwpose the same way; the others are ComfyUI's own).
FOLDER_DEFAULTS = {
    "xdyna": "xdyna",
    "ipadapter": "ipadapter",
    "xdyna_dwpose": "xdyna/dwpose",
    "controlnet": "controlnet",
    "clip_vision": "clip_vision",
    "checkpoints": "checkpoints",
}

OK, ALTERNATIVE, SIZE_DIFFERS, PARTIAL, MISSING = "ok", "alternative", "size differs", "partial", "missing"
PRESENT = (OK, ALTERNATIVE, SIZE_DIFFERS)


class WeightsError(RuntimeError):
    """The model folders cannot be found or used; the message says what to pass."""


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


def comfyui_folders(comfyui: str | Path, extra_configs: Iterable[str | Path] = ()) -> ModelFolders:
    """The model folders of the ComfyUI checkout at `comfyui`, as that ComfyUI resolves them at start."""
    comfyui = Path(comfyui).expanduser().resolve()
    if not (comfyui / "folder_paths.py").is_file():
        raise WeightsError(
            f"{comfyui} is not a ComfyUI folder (it has no folder_paths.py); pass --comfyui or --models-dir"
        )
    loaded = sys.modules.get("folder_paths")
    if loaded is not None and Path(loaded.__file__).resolve().parent != comfyui:
        raise WeightsError(f"another ComfyUI ({Path(loaded.__file__).parent}) is already loaded in this process")
    if loaded is None:
        sys.path.insert(0, str(comfyui))
        import folder_paths as loaded  # ComfyUI's module: stdlib and its argument defaults only
    configs = [comfyui / "extra_model_paths.yaml"] if (comfyui / "extra_model_paths.yaml").is_file() else []
    configs += [Path(c) for c in extra_configs]
    if configs:
        from utils.extra_config import load_extra_path_config  # ComfyUI's reader, so the semantics are its own

        for config in configs:
            load_extra_path_config(str(config))
    return ComfyFolders(loaded)


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


def select(keys: Iterable[str] = (), skip: Iterable[str] = ()) -> list[WeightFile]:
    known = {w.key for w in WEIGHTS}
    unknown = sorted((set(keys) | set(skip)) - known)
    if unknown:
        raise WeightsError(f"unknown weight key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return [w for w in WEIGHTS if (not keys or w.key in keys) and w.key not in set(skip)]


def check(folders: ModelFolders, weights: Iterable[WeightFile] = WEIGHTS) -> list[FileStatus]:
    return [check_file(w, folders) for w in weights]


def human_size(n: int) -> str:
    return f"{n / GB:.2f} GB" if n >= GB else f"{n / MB:.0f} MB"


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
        WeightsMissingError: offline, huggingface_hub absent, or a download failed (every file is tried first).
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
        except Exception as err:  # offline, no route, HTTP errors, disk full: each ends in the same advice
            failures.append((s, f"{s.weight.local_name}: {type(err).__name__}: {err}".split("\n")[0]))
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    if on_file is not None:
        on_file(len(todo), len(todo))
    if failures:
        raise WeightsMissingError(
            [(s.weight, s.target) for s, _ in failures], "download failed; " + "; ".join(m for _, m in failures)
        )
    return check(folders, weights)


# --- command line ----------------------------------------------------------------------------------------


def default_comfyui() -> Path | None:
    """`COMFYUI_PATH`, else the ComfyUI this pack is installed in (`ComfyUI/custom_nodes/<pack>`)."""
    if os.environ.get("COMFYUI_PATH"):
        return Path(os.environ["COMFYUI_PATH"])
    pack = Path(__file__).resolve().parents[1]
    if pack.parent.name == "custom_nodes" and (pack.parent.parent / "folder_paths.py").is_file():
        return pack.parent.parent
    return None


def folders_from_args(args: argparse.Namespace) -> ModelFolders:
    if args.models_dir:
        return PlainFolders(Path(args.models_dir))
    comfyui = args.comfyui or default_comfyui()
    if comfyui is None:
        raise WeightsError("where is ComfyUI? pass --comfyui PATH (or set COMFYUI_PATH), or --models-dir PATH")
    return comfyui_folders(comfyui, args.extra_model_paths)


def table() -> str:
    rows = [
        f"{w.key:<17} {w.local_name:<45} {human_size(w.size):>8}  models/{FOLDER_DEFAULTS[w.folder]:<13} {w.repo_id}/{w.repo_path}  [{w.licence}]"
        for w in WEIGHTS
    ]
    return "\n".join(rows)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xdyna-weights", description="Check and download the model files of X-Dyna for ComfyUI."
    )
    parser.add_argument("command", choices=("list", "check", "download"))
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--comfyui", type=Path, help="ComfyUI folder (default: COMFYUI_PATH, or the ComfyUI this pack is installed in)"
    )
    where.add_argument("--models-dir", type=Path, help="a models folder laid out as ComfyUI's (instead of --comfyui)")
    parser.add_argument(
        "--extra-model-paths",
        action="append",
        default=[],
        metavar="YAML",
        help="further extra_model_paths.yaml files to apply (with --comfyui)",
    )
    parser.add_argument(
        "--only", action="append", default=[], metavar="KEY", help="only these files (keys as in `list`)"
    )
    parser.add_argument(
        "--skip",
        action="append",
        default=[],
        metavar="KEY",
        help="leave these files out (e.g. --skip sd15 when you have another SD1.5 checkpoint)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    if args.command == "list":
        say(table())
        return 0
    try:
        folders = folders_from_args(args)
        weights = select(args.only, args.skip)
        statuses = check(folders, weights) if args.command == "check" else download(folders, weights)
    except (WeightsError, WeightsMissingError) as err:
        say(f"xdyna-weights: {err}", error=True)
        return 2 if isinstance(err, WeightsError) else 1
    say(format_report(statuses))
    return 0 if all(s.present for s in statuses) else 1


if __name__ == "__main__":
    sys.exit(main())
