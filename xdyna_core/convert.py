"""Converting a tensor-only checkpoint (e.g. `unet-checkpoint-epoch-5.ckpt`) to `.safetensors`.

    python -m xdyna_core.convert <in.ckpt> <out.safetensors> [--dtype fp16|bf16|fp32|keep]

Keys are written unchanged, so the pack's loaders read the converted file exactly like the original. fp16
halves the 5.29 GB UNet; ComfyUI casts weights to its compute dtype anyway. The input is read with
`weights_only=True` (memory-mapped) and the output written tensor by tensor, so a conversion needs about
one tensor's worth of extra RAM, not the whole model twice.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

# torch is imported only when converting, so that `python -m xdyna_core.convert --help` answers at once.
logger = logging.getLogger("xdyna")

DTYPE_NAMES = ("fp16", "bf16", "fp32", "keep")  # the --dtype choices; "keep" stores floats as they are


def torch_dtype(name: str) -> torch.dtype | None:
    """The torch dtype of a --dtype choice (None for "keep")."""
    import torch

    dtypes = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32, "keep": None}
    if name not in dtypes:
        raise ValueError(f"unknown dtype {name!r}; use one of {', '.join(DTYPE_NAMES)}")
    return dtypes[name]


def _safetensors_dtype(dtype: torch.dtype) -> str:
    import torch

    names = {
        torch.float64: "F64",
        torch.float32: "F32",
        torch.float16: "F16",
        torch.bfloat16: "BF16",
        torch.int64: "I64",
        torch.int32: "I32",
        torch.int16: "I16",
        torch.int8: "I8",
        torch.uint8: "U8",
        torch.bool: "BOOL",
    }
    return names[dtype]


def _target_dtype(t: torch.Tensor, dtype: torch.dtype | None) -> torch.dtype:
    return dtype if dtype is not None and t.is_floating_point() else t.dtype


def write_safetensors_streaming(
    sd: Mapping[str, torch.Tensor], dst: str | os.PathLike, dtype: torch.dtype | None, metadata: dict[str, str]
) -> None:
    """Write `.safetensors` one tensor at a time, casting floats to `dtype`, so at most one cast tensor is in RAM."""
    if sys.byteorder != "little":  # the format is little-endian; raw tensor bytes are only that on such hosts
        from safetensors.torch import save_file

        save_file({k: v.to(_target_dtype(v, dtype)).contiguous() for k, v in sd.items()}, str(dst), metadata=metadata)
        return
    import torch

    header: dict[str, object] = {"__metadata__": metadata}
    offset = 0
    for key, t in sd.items():
        target = _target_dtype(t, dtype)
        size = t.numel() * torch.empty((), dtype=target).element_size()
        header[key] = {
            "dtype": _safetensors_dtype(target),
            "shape": list(t.shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # the data section starts 8-byte aligned, as safetensors itself writes
    with open(dst, "wb") as f:
        f.write(len(blob).to_bytes(8, "little"))
        f.write(blob)
        for t in sd.values():
            data = t.detach().to(_target_dtype(t, dtype)).contiguous().reshape(-1)
            f.write(data.view(torch.uint8).numpy())


def convert_to_safetensors(
    src: str | os.PathLike, dst: str | os.PathLike, dtype: torch.dtype | str | None = "fp16"
) -> Path:
    """Convert a tensor-only checkpoint to `.safetensors`, keys unchanged (so the same loaders read it).

    Args:
        src: `.ckpt`/`.pt`/`.pth`/`.bin` (or `.safetensors`) holding one state dict; a `"state_dict"` wrapper
            and a `module.` prefix are removed.
        dst: output path; written to a temporary name first, so a failed run leaves no half file behind.
        dtype: floating tensors are cast to this (fp16 halves the 5.29 GB UNet); None keeps them as stored.
            A torch dtype or one of `DTYPE_NAMES`.
    """
    import torch

    from .checkpoints import load_state_dict_file

    if isinstance(dtype, str):
        dtype = torch_dtype(dtype)
    src, dst = Path(src), Path(dst)
    if src.resolve() == dst.resolve():
        raise ValueError(f"{dst}: refusing to overwrite the source file")
    if dtype is not None and dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise ValueError(f"unsupported dtype {dtype}; use float16, bfloat16 or float32")
    sd = load_state_dict_file(src)
    partial = dst.with_name(dst.name + ".partial")
    stored = str(dtype).removeprefix("torch.") if dtype else "as stored"
    metadata = {"format": "pt", "converted_from": src.name, "dtype": stored}
    try:
        write_safetensors_streaming(sd, partial, dtype, metadata)
        os.replace(partial, dst)
    finally:
        partial.unlink(missing_ok=True)
    logger.info("%s: wrote %d tensors (%s) to %s", src, len(sd), stored, dst)
    return dst


def main(argv: list[str] | None = None) -> int:
    """Run the converter from the command line; returns the process exit status."""
    parser = argparse.ArgumentParser(prog="python -m xdyna_core.convert", description=__doc__.splitlines()[0])
    parser.add_argument("src", help="input .ckpt / .pt / .pth / .bin (tensor-only, read with weights_only=True)")
    parser.add_argument("dst", help="output .safetensors")
    parser.add_argument(
        "--dtype", choices=DTYPE_NAMES, default="fp16", help="floating-point type to store (default fp16)"
    )
    args = parser.parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    from .checkpoints import XDynaCheckpointError

    try:
        convert_to_safetensors(args.src, args.dst, args.dtype)
    except (XDynaCheckpointError, FileNotFoundError, ValueError) as e:
        logger.error("%s", e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
