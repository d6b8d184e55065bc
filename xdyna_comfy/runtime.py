"""Work outside the UNet that still answers to ComfyUI: its device for onnxruntime, memory, progress, interrupts."""

from __future__ import annotations

import ctypes
import functools
import sys

import comfy.utils
from comfy import model_management


def free_gpu_memory_for(nbytes: int) -> None:
    """Ask ComfyUI's memory manager to unload models until `nbytes` are free on its device (a no-op on CPU).

    onnxruntime allocates outside ComfyUI's accounting, so room is made before its sessions start.
    """
    device = model_management.get_torch_device()
    if getattr(device, "type", "cpu") != "cpu":
        model_management.free_memory(nbytes, device)


def onnx_device_id() -> int | None:
    """The CUDA/ROCm device index ComfyUI computes on, for onnxruntime's GPU providers (None on CPU)."""
    device = model_management.get_torch_device()
    return (device.index or 0) if getattr(device, "type", "cpu") == "cuda" else None


def frame_progress(total: int):
    """A `(done, total)` callback driving ComfyUI's progress bar that raises when the user interrupts."""
    bar = comfy.utils.ProgressBar(total)

    def report(done: int, total_: int) -> None:
        model_management.throw_exception_if_processing_interrupted()
        bar.update_absolute(done, total_)

    return report


@functools.cache
def _malloc_trim():
    """glibc's `malloc_trim`, or None where the C library has none (macOS, Windows, musl)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def release_freed_host_memory() -> bool:
    """Give the pages of the C heap's free chunks back to the OS (glibc `malloc_trim(0)`); False where unsupported.

    glibc keeps freed blocks below its (self-raising) mmap threshold in the heap. When a clip's latents, held
    for the whole run, sit between one window's freed temporaries, those pages stay resident and the next
    window's temporaries land partly elsewhere, so the resident memory of a CPU run grows with the clip.
    Trimming between windows returns them; it costs a walk of the free lists and re-faulting what is reused.
    """
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
