"""Reading X-Dyna's released weight files safely, and splitting the UNet checkpoint into its parts.

`unet-checkpoint-epoch-5.ckpt` is one flat diffusers state dict holding four things (docs/xdyna_model.md §2): the SD1.5 UNet,
the Dynamics-Adapter (`attn1.to_q_ff` / `to_out_ff`), IP-Adapter k/v (`attn2.to_k_ip` / `to_v_ip`) and
AnimateDiff-v1 motion modules. `split_xdyna_unet` separates them and reads the sizes from the tensors, so a
tiny checkpoint in the same layout loads through the same code. Files are only ever unpickled with
`torch.load(weights_only=True)`: the release holds plain tensors, so anything else is refused.
"""

from __future__ import annotations

import logging
import os
import pickle
import pickletools
import re
import struct
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from .file_kinds import git_lfs_pointer_message, git_lfs_pointer_size, human_size
from .motion_module import MotionModule

logger = logging.getLogger("xdyna")

StateDict = dict[str, torch.Tensor]

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
SAFETENSORS_SUFFIXES = (".safetensors", ".sft")
UNET_FILE_HINT = "unet-checkpoint-epoch-5.ckpt from Hugging Face Boese0601/X-Dyna"
CONVERTER_HINT = "python -m xdyna_core.convert <in.ckpt> <out.safetensors>"  # see convert.py

# Top-level modules of diffusers' SD1.5 UNet2DConditionModel; anything else in the file is reported.
_UNET_ROOTS = ("conv_in.", "time_embedding.", "down_blocks.", "mid_block.", "up_blocks.", "conv_norm_out.", "conv_out.")
_ADAPTER_KEY = re.compile(
    r"^(.+\.transformer_blocks\.\d+\.attn1)\.(to_q_ff\.weight|to_out_ff\.weight|to_out_ff\.bias)$"
)
_IP_KEY = re.compile(r"^(.+\.transformer_blocks\.\d+\.attn2)\.(to_k_ip\.weight|to_v_ip\.weight)$")
_MOTION_KEY = re.compile(r"^((?:down_blocks\.\d+|up_blocks\.\d+|mid_block)\.motion_modules\.\d+)\.(.+)$")
_SPATIAL_BLOCK = re.compile(r"^(.+\.attentions\.\d+\.transformer_blocks\.\d+)\.attn1\.to_q\.weight$")
# Any key of a ResNet (not one named tensor), so a file missing that tensor is not taken for one ResNet short.
_RESNET = re.compile(r"^((?:down|up)_blocks)\.(\d+)\.resnets\.(\d+)\.")
_ADAPTER_NAMES = ("to_q_ff.weight", "to_out_ff.weight", "to_out_ff.bias")
_IP_NAMES = ("to_k_ip.weight", "to_v_ip.weight")
LATENT_CHANNELS = 4  # the SD1.5 VAE latent X-Dyna's UNet reads and writes
# torch.save's legacy format begins with a pickled LONG1 of this magic number (torch/serialization.py).
_LEGACY_MAGIC = b"\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")


class XDynaCheckpointError(ValueError):
    """A weight file that cannot be read safely: damaged, holding non-tensor objects, or not a state dict.

    Args:
        source: the file (or a description of the state dict) the error is about; the message names it.
        message: what was found and what to do.
    """

    def __init__(self, source: str | os.PathLike, message: str) -> None:
        self.source = str(source)
        super().__init__(f"{self.source}: {message}")


class XDynaLayoutError(XDynaCheckpointError):
    """A readable weight file that is not the model expected here (another model, or parts missing)."""


@dataclass(frozen=True)
class UNetShapeConfig:
    """Sizes of the SD1.5-architecture UNet, read from the checkpoint's tensors.

    Args:
        block_out_channels: output width of each resolution level (SD1.5: 320, 640, 1280, 1280).
        in_channels, out_channels: latent channels (4).
        cross_attention_dim: context width of `attn2` (768).
        layers_per_block: ResNets per down block (2; up blocks have one more).
        transformer_layers_per_block: transformer blocks in each spatial transformer (1).
        down_block_has_attention: which down levels have spatial transformers (all but the last).
        time_embed_dim: width of the timestep embedding (1280).
        attention_heads: 8, as SD1.5. The weights cannot tell heads from head width, so this is the
            SD1.5 value, not a measurement.
        motion_pe_length: rows of the motion modules' position table: the longest window (24).
    """

    block_out_channels: tuple[int, ...]
    in_channels: int
    out_channels: int
    cross_attention_dim: int
    layers_per_block: int
    transformer_layers_per_block: int
    down_block_has_attention: tuple[bool, ...]
    time_embed_dim: int
    motion_pe_length: int
    attention_heads: int = 8


@dataclass
class XDynaUNetParts:
    """The X-Dyna UNet checkpoint split by origin.

    Args:
        unet: the plain diffusers `UNet2DConditionModel` keys.
        dynamics_adapter: `…transformer_blocks.0.attn1` → {to_q_ff.weight, to_out_ff.weight, to_out_ff.bias}.
        ip_adapter: `…transformer_blocks.0.attn2` → {to_k_ip.weight, to_v_ip.weight}.
        motion_modules: `down_blocks.i.motion_modules.j` / `up_blocks.i.motion_modules.j` → that module's
            state dict (loadable with `MotionModule.from_state_dict`).
        config: the UNet's sizes.
        extra: keys of no known part (reported with a warning, otherwise ignored).
        source: the file they came from.
    """

    unet: StateDict
    dynamics_adapter: dict[str, StateDict]
    ip_adapter: dict[str, StateDict]
    motion_modules: dict[str, StateDict]
    config: UNetShapeConfig
    extra: StateDict = field(default_factory=dict)
    source: str = "<state dict>"


# --- reading files ------------------------------------------------------------------------------------------


def _damaged(path: Path, error: BaseException) -> XDynaCheckpointError:
    return XDynaCheckpointError(
        path,
        f"the file is damaged or incomplete ({type(error).__name__}: {str(error).strip()[:200]}); "
        "it was probably cut short while downloading: delete it and download it again.",
    )


def _refused_pickle(path: Path, error: BaseException) -> XDynaCheckpointError:
    found = re.search(r"GLOBAL (\S+)", str(error))
    what = f" (it references {found[1]})" if found else ""
    return XDynaCheckpointError(
        path,
        f"the file contains non-tensor Python objects{what} and will not be unpickled, for safety (unpickling "
        "can run arbitrary code). The released X-Dyna and IP-Adapter files hold only tensors, so this is not one "
        f"of them or it was altered: download the original, or save tensor-only weights as .safetensors "
        f"({CONVERTER_HINT} converts tensor-only checkpoints).",
    )


def _pickle_stream_is_cut(path: Path) -> bool:
    """Whether the leading pickles of a legacy (pre-zip) torch file end early.

    Only parses opcodes (`pickletools.genops` never builds objects), so nothing in the file runs. Needed
    because a legacy file cut mid-pickle can stop inside a class name, which weights_only then reports as a
    forbidden global, exactly like a file that really holds foreign objects.
    """
    with open(path, "rb") as f:
        for _ in range(5):  # magic number, protocol, system info, the object, storage keys
            if not f.read(1):
                return False
            f.seek(-1, os.SEEK_CUR)
            try:
                for _op in pickletools.genops(f):
                    pass
            except ValueError:
                return True
    return False


def _out_of_memory(path: Path) -> XDynaCheckpointError:
    return XDynaCheckpointError(
        path,
        f"reading it ran out of memory (the file is {human_size(path.stat().st_size)}): either this machine lacks "
        "the RAM for it, or the file is damaged and claims an impossible size. Compare its size with the "
        "original download and download it again if they differ; otherwise free memory (close other programs).",
    )


def _is_legacy_torch_file(head: bytes) -> bool:
    """Whether a file starts as `torch.save` wrote files before the zip format: a pickle of its magic number."""
    return head[:1] == b"\x80" and _LEGACY_MAGIC in head[:32]


def _load_pickle(path: Path) -> object:
    is_zip = zipfile.is_zipfile(path)
    with open(path, "rb") as f:
        head = f.read(32)
    if not is_zip and head.startswith(b"PK"):  # a zip archive without its central directory: cut short
        raise _damaged(path, EOFError("zip archive has no end-of-archive record"))
    if not is_zip and not _is_legacy_torch_file(head):
        # Only torch.save's two formats are weight files; unpickling anything else can ask for absurd sizes
        # (a random .bin ends in MemoryError) or report "forbidden globals" for what is just noise.
        raise XDynaCheckpointError(
            path,
            f"this is not a PyTorch weight file (neither torch.save's zip nor its legacy format; it starts with "
            f"{head[:8]!r}): another kind of file under a weight file's name, or a damaged one. Download the "
            "model file again.",
        )
    try:
        # mmap keeps a multi-GB file out of RAM until its tensors are used (zip format only).
        return torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
    except pickle.UnpicklingError as e:
        if not is_zip and _pickle_stream_is_cut(path):
            raise _damaged(path, e) from None
        raise _refused_pickle(path, e) from None
    except MemoryError:
        raise _out_of_memory(path) from None
    except (RuntimeError, OSError, EOFError, ValueError, zipfile.BadZipFile, KeyError, IndexError, struct.error) as e:
        raise _damaged(path, e) from None


def read_weights_file(path: str | os.PathLike) -> object:
    """The object stored in a weight file, read without running any code from it.

    `.safetensors` gives a flat dict of tensors; `.ckpt`/`.pt`/`.pth`/`.bin` may hold nested dicts of tensors
    (as `ip-adapter-plus_sd15.bin` does). Raises XDynaCheckpointError for damaged or unsafe files.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    pointer = git_lfs_pointer_size(path)
    if pointer is not None:
        raise XDynaCheckpointError(path, git_lfs_pointer_message(path, pointer))
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        try:
            return load_file(str(path), device="cpu")
        except MemoryError:
            raise _out_of_memory(path) from None
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            raise _damaged(path, e) from None
    if suffix in PICKLE_SUFFIXES:
        return _load_pickle(path)
    raise XDynaCheckpointError(
        path, f"unsupported file type {suffix!r}; expected one of {SAFETENSORS_SUFFIXES + PICKLE_SUFFIXES}"
    )


def normalize_state_dict(obj: object, source: str | os.PathLike = "<state dict>") -> StateDict:
    """A flat `name → tensor` dict from a loaded checkpoint: unwraps `"state_dict"` and a `module.` prefix."""
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]  # training checkpoints keep epoch counters etc. beside it
    if not isinstance(obj, Mapping) or not obj:
        raise XDynaCheckpointError(source, f"expected a dict of tensors, found {type(obj).__name__} (or an empty dict)")
    bad = [(k, v) for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        key, value = bad[0]
        nested = [k for k, v in obj.items() if isinstance(v, Mapping)]
        hint = f" It holds nested dicts {nested[:4]}: a bundle of several models, not one state dict." if nested else ""
        raise XDynaCheckpointError(
            source,
            f"expected a dict of tensors, but {len(bad)} entries are not tensors (e.g. {key!r}: "
            f"{type(value).__name__}).{hint}",
        )
    sd = dict(obj)
    if all(k.startswith("module.") for k in sd):  # saved from a DistributedDataParallel wrapper
        sd = {k.removeprefix("module."): v for k, v in sd.items()}
    return sd


def load_state_dict_file(path: str | os.PathLike) -> StateDict:
    """A flat state dict from `.safetensors` or a tensor-only `.ckpt`/`.pt`/`.pth`/`.bin` (weights_only)."""
    return normalize_state_dict(read_weights_file(path), path)


# --- splitting the X-Dyna UNet ------------------------------------------------------------------------------


def _check_foreign(sd: StateDict, source: str) -> None:
    """Recognise the files people mistake for the X-Dyna UNet and say which file belongs here."""
    keys = list(sd)
    ldm = [
        k for k in keys if k.startswith(("model.diffusion_model.", "input_blocks.", "middle_block.", "output_blocks."))
    ]
    if ldm:
        sdxl = any("label_emb." in k or k.startswith("conditioner.") for k in keys)
        kind = "an SDXL" if sdxl else "a Stable Diffusion"
        raise XDynaLayoutError(
            source,
            f"this is {kind} checkpoint in ComfyUI/ldm format (keys like {ldm[0]!r}), not the X-Dyna UNet. "
            f"Load {UNET_FILE_HINT} here; an SD1.5 checkpoint only supplies the VAE and text encoder.",
        )
    if any(k.startswith("add_embedding.") for k in keys):
        raise XDynaLayoutError(
            source,
            f"this is an SDXL UNet in diffusers format (it has 'add_embedding'), not the X-Dyna UNet (SD1.5-based). "
            f"Load {UNET_FILE_HINT} here.",
        )
    if any(k.startswith("controlnet_cond_embedding.") for k in keys):
        raise XDynaLayoutError(
            source,
            "this is a ControlNet (it has 'controlnet_cond_embedding'), not the X-Dyna UNet: load it as the pose "
            f"or S-Face ControlNet, and load {UNET_FILE_HINT} as the UNet.",
        )


def _classify(
    sd: StateDict,
) -> tuple[StateDict, dict[str, StateDict], dict[str, StateDict], dict[str, StateDict], StateDict]:
    unet: StateDict = {}
    adapter: dict[str, StateDict] = {}
    ip: dict[str, StateDict] = {}
    motion: dict[str, StateDict] = {}
    extra: StateDict = {}
    for key, value in sd.items():
        if m := _MOTION_KEY.match(key):
            motion.setdefault(m[1], {})[m[2]] = value
        elif m := _ADAPTER_KEY.match(key):
            adapter.setdefault(m[1], {})[m[2]] = value
        elif m := _IP_KEY.match(key):
            ip.setdefault(m[1], {})[m[2]] = value
        elif key.startswith(_UNET_ROOTS) and not re.search(r"\.(to_\w+_ff|to_\w+_ip)\.", key):
            unet[key] = value
        else:
            extra[key] = value
    return unet, adapter, ip, motion, extra


def _compare(source: str, part: str, found: set[str], expected: set[str], keys_each: int, why: str) -> None:
    if found == expected:
        return
    missing, unexpected = sorted(expected - found), sorted(found - expected)
    detail = f"; missing at {missing[:3]}" if missing else ""
    detail += f"; unexpected at {unexpected[:3]}" if unexpected else ""
    raise XDynaLayoutError(
        source,
        f"found {len(found)} {part} ({len(found) * keys_each} keys), expected {len(expected)} "
        f"({len(expected) * keys_each} keys), {why}{detail}. The file does not have the X-Dyna layout; "
        f"re-download {UNET_FILE_HINT}.",
    )


def _check_block_keys(source: str, part: str, blocks: dict[str, StateDict], names: tuple[str, ...]) -> None:
    for prefix, tensors in blocks.items():
        if set(tensors) != set(names):
            raise XDynaLayoutError(
                source,
                f"{part} at {prefix} has {sorted(tensors)}, expected {list(names)}; re-download {UNET_FILE_HINT}.",
            )


def _check_latent_channels(source: str, unet: StateDict) -> None:
    """X-Dyna's UNet reads and writes the 4-channel SD1.5 latent; inpainting UNets read 9 and fail only mid-run."""
    found_in = unet["conv_in.weight"].shape[1] if unet["conv_in.weight"].ndim == 4 else None
    out = unet.get("conv_out.weight")
    found_out = out.shape[0] if out is not None and out.ndim == 4 else None
    if found_in == LATENT_CHANNELS and found_out in (LATENT_CHANNELS, None):
        return
    if found_in == 9:
        what = "an inpainting UNet (4 latent channels + 4 of the masked image + 1 of the mask)"
    else:
        what = f"a UNet reading {found_in} and writing {found_out} channels"
    raise XDynaLayoutError(
        source,
        f"this is {what}, but X-Dyna's UNet reads and writes the {LATENT_CHANNELS}-channel SD1.5 latent. "
        f"Load {UNET_FILE_HINT} here.",
    )


def _read_config(source: str, unet: StateDict, motion: dict[str, StateDict]) -> UNetShapeConfig:
    try:
        return _config_from_tensors(source, unet, motion)
    except KeyError as missing:
        raise XDynaLayoutError(
            source, f"the UNet lacks the tensor {missing.args[0]!r} of the SD1.5 layout; re-download {UNET_FILE_HINT}."
        ) from None


def _config_from_tensors(source: str, unet: StateDict, motion: dict[str, StateDict]) -> UNetShapeConfig:
    resnets: dict[tuple[str, int], int] = {}
    for key in unet:
        if m := _RESNET.match(key):
            resnets[(m[1], int(m[2]))] = max(resnets.get((m[1], int(m[2])), 0), int(m[3]) + 1)
    levels = sorted(i for kind, i in resnets if kind == "down_blocks")
    widths = tuple(unet[f"down_blocks.{i}.resnets.0.conv1.weight"].shape[0] for i in levels)
    attn_keys = [k for k in unet if k.endswith(".attn2.to_k.weight")]
    blocks = {m[1] for k in unet if (m := re.match(r"^(down_blocks\.0\.attentions\.0\.transformer_blocks\.\d+)\.", k))}
    first_motion = next(iter(motion.values()))
    pe = next((v for k, v in first_motion.items() if k.endswith("pos_encoder.pe")), None)
    if not levels or not attn_keys or pe is None:
        raise XDynaLayoutError(
            source, "cannot read the UNet sizes (no down-block ResNets, cross-attention or position table)."
        )
    return UNetShapeConfig(
        block_out_channels=widths,
        in_channels=unet["conv_in.weight"].shape[1],
        out_channels=unet["conv_out.weight"].shape[0],
        cross_attention_dim=unet[attn_keys[0]].shape[1],
        layers_per_block=resnets[("down_blocks", levels[0])],
        transformer_layers_per_block=len(blocks),
        down_block_has_attention=tuple(any(k.startswith(f"down_blocks.{i}.attentions.") for k in unet) for i in levels),
        time_embed_dim=unet["time_embedding.linear_1.weight"].shape[0],
        motion_pe_length=pe.shape[1],
    )


def _motion_module_keys(tensors: StateDict) -> set[str]:
    """The key set of a motion module with the structure (blocks, attentions) found in `tensors`."""
    blocks = {int(m[1]) for k in tensors if (m := re.match(r"temporal_transformer\.transformer_blocks\.(\d+)\.", k))}
    attns = {int(m[1]) for k in tensors if (m := re.search(r"\.attention_blocks\.(\d+)\.", k))}
    with torch.device("meta"):  # only the key names are wanted: allocate nothing
        module = MotionModule(32, 8, max(blocks, default=0) + 1, max(attns, default=1) + 1)
    return set(module.state_dict())


def split_xdyna_unet(sd: Mapping[str, torch.Tensor], source: str | os.PathLike = "<state dict>") -> XDynaUNetParts:
    """Split the X-Dyna UNet state dict into UNet, Dynamics-Adapter, IP k/v and motion modules, checking the layout.

    Args:
        sd: the checkpoint's tensors (a `"state_dict"` wrapper and a `module.` prefix are removed).
        source: the file name, for error messages.

    Raises XDynaLayoutError naming `source` when the dict is another model (SD/SDXL, ControlNet, AnimateDiff
    motion modules alone, a plain SD1.5 UNet) or a part is missing or incomplete.
    """
    source = str(source)
    sd = normalize_state_dict(sd, source)
    _check_foreign(sd, source)
    unet, adapter, ip, motion, extra = _classify(sd)

    if "conv_in.weight" not in unet:
        if motion:
            raise XDynaLayoutError(
                source,
                f"this holds only motion modules ({len(motion)} AnimateDiff modules, no UNet weights): X-Dyna's UNet "
                f"checkpoint carries its own fine-tuned motion modules. Load {UNET_FILE_HINT} here.",
            )
        raise XDynaLayoutError(
            source,
            f"no UNet weights found ('conv_in.weight' is missing; keys look like {list(sd)[:3]}). Load {UNET_FILE_HINT}.",
        )
    _check_latent_channels(source, unet)
    missing = [
        name
        for name, part in (
            ("Dynamics-Adapter weights (attn1.to_q_ff / to_out_ff)", adapter),
            ("IP-Adapter k/v (attn2.to_k_ip / to_v_ip)", ip),
            ("motion modules", motion),
        )
        if not part
    ]
    if missing:
        plain = " It is a plain SD1.5 UNet, not X-Dyna's." if len(missing) == 3 else ""
        raise XDynaLayoutError(source, f"the UNet has no {', no '.join(missing)}.{plain} Load {UNET_FILE_HINT} here.")

    spatial = {m[1] for k in unet if (m := _SPATIAL_BLOCK.match(k))}
    _compare(
        source,
        "Dynamics-Adapter blocks",
        set(adapter),
        {f"{b}.attn1" for b in spatial},
        3,
        "one per spatial transformer block",
    )
    _check_block_keys(source, "the Dynamics-Adapter", adapter, _ADAPTER_NAMES)
    _compare(
        source,
        "IP-Adapter k/v blocks",
        set(ip),
        {f"{b}.attn2" for b in spatial},
        2,
        "one per spatial transformer block",
    )
    _check_block_keys(source, "the IP-Adapter k/v", ip, _IP_NAMES)
    for prefix, tensors in adapter.items():
        width = unet[f"{prefix}.to_q.weight"].shape[0]
        if tuple(tensors["to_q_ff.weight"].shape) != (width, width):
            raise XDynaLayoutError(
                source,
                f"{prefix}.to_q_ff.weight has shape {tuple(tensors['to_q_ff.weight'].shape)}, expected ({width}, {width}).",
            )

    resnet_blocks = {(m[1], m[2], m[3]) for k in unet if (m := _RESNET.match(k))}
    expected_motion = {f"{kind}.{i}.motion_modules.{j}" for kind, i, j in resnet_blocks}
    module_keys = _motion_module_keys(next(iter(motion.values())))
    _compare(
        source, "motion modules", set(motion), expected_motion, len(module_keys), "one after each down/up-block ResNet"
    )
    for prefix, tensors in motion.items():
        if set(tensors) != module_keys:
            odd = sorted(set(tensors) ^ module_keys)
            raise XDynaLayoutError(
                source, f"motion module {prefix} does not have the AnimateDiff-v1 keys (differs at {odd[:3]})."
            )

    if extra:
        logger.warning("%s: ignoring %d keys of no known X-Dyna part, e.g. %s", source, len(extra), sorted(extra)[:5])
    config = _read_config(source, unet, motion)
    return XDynaUNetParts(unet, adapter, ip, motion, config, extra, source)


def load_xdyna_unet(path: str | os.PathLike) -> XDynaUNetParts:
    """Read and split an X-Dyna UNet checkpoint (`.ckpt` or converted `.safetensors`)."""
    return split_xdyna_unet(load_state_dict_file(path), source=path)
