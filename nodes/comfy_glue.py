"""The one place that touches ComfyUI internals (folder_paths, and later ModelPatcher, model_management)."""

from __future__ import annotations

import os

import folder_paths

XDYNA_FOLDER = "xdyna"


def register_model_folders() -> None:
    """Register `models/xdyna` (X-Dyna UNet checkpoints) with ComfyUI, idempotently.

    Paths added by `extra_model_paths.yaml` under the same name are kept; ours is appended after them.
    """
    default = os.path.join(folder_paths.models_dir, XDYNA_FOLDER)
    folder_paths.add_model_folder_path(XDYNA_FOLDER, default)
    paths, _extensions = folder_paths.folder_names_and_paths[XDYNA_FOLDER]
    folder_paths.folder_names_and_paths[XDYNA_FOLDER] = (paths, set(folder_paths.supported_pt_extensions))
