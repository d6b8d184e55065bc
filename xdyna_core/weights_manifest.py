"""The model files X-Dyna for ComfyUI needs: source, size, licence and ComfyUI model folder of each.

One table for everything that names them: the X-Dyna Check Weights node and `python -m xdyna_tools.weights`
(through `weights_check`), the README's weights table, and the `models` metadata of the example workflows.
Sizes and licences were read from the Hugging Face repositories (Git LFS pointers where exact).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .downloads import RemoteFile

GB, MB, KB = 1_000_000_000, 1_000_000, 1_000  # Hugging Face states sizes in SI units
SIZE_TOLERANCE = 0.01  # for sizes known to three digits only


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

# Where each folder lies under ComfyUI's models/ when nothing else is configured (xdyna_comfy/folders.py registers
# xdyna, ipadapter and xdyna_dwpose the same way; the others are ComfyUI's own).
FOLDER_DEFAULTS = {
    "xdyna": "xdyna",
    "ipadapter": "ipadapter",
    "xdyna_dwpose": "xdyna/dwpose",
    "controlnet": "controlnet",
    "clip_vision": "clip_vision",
    "checkpoints": "checkpoints",
}


class WeightsError(RuntimeError):
    """The model folders cannot be found or used; the message says what to pass."""


def select(keys: Iterable[str] = (), skip: Iterable[str] = ()) -> list[WeightFile]:
    known = {w.key for w in WEIGHTS}
    unknown = sorted((set(keys) | set(skip)) - known)
    if unknown:
        raise WeightsError(f"unknown weight key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return [w for w in WEIGHTS if (not keys or w.key in keys) and w.key not in set(skip)]


def human_size(n: int) -> str:
    """A size as Hugging Face shows it (SI units); small files in kB or bytes, never a misleading "0 MB"."""
    if n >= GB:
        return f"{n / GB:.2f} GB"
    if n >= MB:
        return f"{n / MB:.0f} MB"
    if n >= KB:
        return f"{n / KB:.0f} kB"
    return f"{n} bytes"
