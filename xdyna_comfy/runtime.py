"""Work outside the UNet that still answers to ComfyUI: its device for onnxruntime, memory, progress, interrupts."""

from __future__ import annotations

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
