"""ComfyUI's model folders for X-Dyna's files: registration, listing, and paths (honouring extra_model_paths.yaml)."""

from __future__ import annotations

import os

import folder_paths

XDYNA_FOLDER = "xdyna"
IPADAPTER_FOLDER = "ipadapter"  # the folder name IP-Adapter packs use, so one copy of the file serves both


def register_model_folders() -> None:
    """Register `models/xdyna` (X-Dyna UNet checkpoints) and `models/ipadapter` with ComfyUI, idempotently.

    Paths added by `extra_model_paths.yaml` under the same names are kept; ours are appended after them.
    """
    for name in (XDYNA_FOLDER, IPADAPTER_FOLDER):
        folder_paths.add_model_folder_path(name, os.path.join(folder_paths.models_dir, name))
        paths, extensions = folder_paths.folder_names_and_paths[name]
        folder_paths.folder_names_and_paths[name] = (paths, set(extensions) | set(folder_paths.supported_pt_extensions))
    register_dwpose_folder()


def model_files(folder: str) -> list[str]:
    return folder_paths.get_filename_list(folder)


def model_path(folder: str, name: str) -> str:
    """The full path of a model file, or an error naming the file and the folders searched."""
    path = folder_paths.get_full_path(folder, name)
    if path is None:
        searched = ", ".join(folder_paths.get_folder_paths(folder))
        raise FileNotFoundError(f"model file {name!r} not found in the {folder!r} folders ({searched}); put it there")
    return path


DWPOSE_FOLDER = "xdyna_dwpose"  # models/xdyna/dwpose; extra_model_paths.yaml may add paths under this name
ONNX_EXTENSIONS = {".onnx"}


def register_dwpose_folder() -> None:
    """Register `models/xdyna/dwpose` for the DWPose ONNX files (`.onnx` only), idempotently."""
    folder_paths.add_model_folder_path(DWPOSE_FOLDER, os.path.join(folder_paths.models_dir, "xdyna", "dwpose"))
    paths, extensions = folder_paths.folder_names_and_paths[DWPOSE_FOLDER]
    folder_paths.folder_names_and_paths[DWPOSE_FOLDER] = (paths, set(extensions) | ONNX_EXTENSIONS)


def dwpose_folders() -> list[str]:
    """Folders holding DWPose files, the download folder first (`models/xdyna/dwpose` unless configured)."""
    if DWPOSE_FOLDER not in folder_paths.folder_names_and_paths:
        register_dwpose_folder()
    return list(folder_paths.get_folder_paths(DWPOSE_FOLDER))


def dwpose_model_files() -> list[str]:
    """The `.onnx` files in the DWPose folders, as names relative to their folder."""
    dwpose_folders()
    return list(folder_paths.get_filename_list(DWPOSE_FOLDER))
