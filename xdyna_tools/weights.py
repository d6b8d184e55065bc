"""The model files X-Dyna for ComfyUI needs: source, size, licence and ComfyUI model folder of each; check and download.

    python -m xdyna_tools.weights list
    python -m xdyna_tools.weights check    [--comfyui PATH | --models-dir PATH] [--extra-model-paths YAML ...]
    python -m xdyna_tools.weights download [--comfyui PATH | --models-dir PATH] [--only KEY ...] [--skip KEY ...]

Files are looked for in every folder ComfyUI searches for their kind (with `--comfyui`, ComfyUI's own
`folder_paths` is loaded from the checkout and its `extra_model_paths.yaml` applied, as ComfyUI does at start),
and downloaded with huggingface_hub into the first of them: under ComfyUI's `models/` (or a configured
folder), never into `custom_nodes/`. Offline, the error names every file, where it comes from and the folder to
put it in. The table itself and the check and download logic live in `xdyna_core.weights_manifest` and
`xdyna_core.weights_check` (the X-Dyna Check Weights node uses them too); this module is the command.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Iterable
from pathlib import Path

from xdyna_core.weights_check import (  # noqa: F401  (re-exported: the command's names since 0.1)
    ALTERNATIVE,
    MISSING,
    OK,
    PARTIAL,
    PRESENT,
    SIZE_DIFFERS,
    STAGING,
    ComfyFolders,
    FileStatus,
    ModelFolders,
    PlainFolders,
    WeightsMissingError,
    check,
    download,
    format_report,
)
from xdyna_core.weights_manifest import (  # noqa: F401
    FOLDER_DEFAULTS,
    WEIGHTS,
    WeightFile,
    WeightsError,
    human_size,
    select,
)

from .cli import say

logger = logging.getLogger("xdyna.weights")


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
    for config in map(Path, extra_configs):
        if not config.is_file():
            raise WeightsError(
                f"--extra-model-paths {config}: no such file; pass the path of an extra_model_paths.yaml "
                "(ComfyUI's extra_model_paths.yaml.example shows the layout)"
            )
        configs.append(config)
    if configs:
        from utils.extra_config import load_extra_path_config  # ComfyUI's reader, so the semantics are its own

        for config in configs:
            try:
                load_extra_path_config(str(config))
            except Exception as err:  # yaml syntax errors and wrong shapes alike: ComfyUI's reader checks nothing
                raise WeightsError(
                    f"{config} is not a usable extra_model_paths.yaml ({_config_problem(err)}); it must map a name to "
                    "`base_path` and folder kinds (e.g. `controlnet: models/controlnet`), as ComfyUI's "
                    "extra_model_paths.yaml.example shows"
                ) from err
    return ComfyFolders(loaded)


def _config_problem(err: Exception) -> str:
    mark = getattr(err, "problem_mark", None)  # yaml's syntax errors say where
    if mark is not None:
        return f"YAML syntax error at line {mark.line + 1}: {getattr(err, 'problem', '') or err}"
    return f"{type(err).__name__}: {err}".splitlines()[0]


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
