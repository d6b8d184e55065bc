"""Host memory of CPU runs: the C heap's freed pages go back to the OS between context windows."""

from __future__ import annotations

import ctypes
import sys
from pathlib import Path

import pytest
import torch

from tests.fixtures.official_layout import TINY_UNET
from tests.host.xdyna_setup import pack, random_reference, tiny_xdyna

glibc = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="malloc_trim is glibc's (Linux)")


def resident_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@glibc
def test_freed_heap_blocks_between_live_ones_are_returned(comfy_host):
    """Blocks freed between blocks still in use stay resident (free() only trims the heap's top); trimming
    returns their pages."""
    runtime = pack(comfy_host, "xdyna_comfy.runtime")
    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    block, count = 96 << 10, 2048  # below glibc's smallest mmap threshold (128 KiB): heap blocks, 192 MiB in all
    blocks = [libc.malloc(block) for _ in range(count)]
    try:
        for pointer in blocks:
            ctypes.memset(pointer, 1, block)  # resident
        start = resident_bytes()
        for pointer in blocks[::2]:  # each freed block lies between two live ones
            libc.free(pointer)
        freed = block * (count // 2)
        after_free = resident_bytes()
        assert runtime.release_freed_host_memory() is True
        after_trim = resident_bytes()
    finally:
        for pointer in blocks[1::2]:
            libc.free(pointer)
    assert start - after_free < 0.2 * freed, "free() alone returned the holes: the test would show nothing"
    assert after_free - after_trim > 0.8 * freed, f"trimming returned {(after_free - after_trim) / 2**20:.1f} MiB"


@glibc
def test_cpu_runs_trim_before_every_window(comfy_host, monkeypatch):
    """Each window of a windowed CPU run starts from a trimmed heap; a one-window clip has nothing to trim."""
    import comfy.sample

    windows_module = pack(comfy_host, "xdyna_core.windows")
    context = pack(comfy_host, "xdyna_comfy.context_windows")
    tiny = tiny_xdyna(comfy_host, seed=2)
    model = (
        pack(comfy_host, "nodes.model_nodes")
        .XDynaApplyDynamicsAdapter.execute(
            tiny.model, tiny.weights, random_reference(comfy_host, TINY_UNET, 4, 6, 0), 1.0
        )
        .args[0]
        .clone()
    )
    options = context.ContextOptions(seed=9)
    options.apply_to(model)
    trims = []
    real = context.release_freed_host_memory
    monkeypatch.setattr(context, "release_freed_host_memory", lambda: trims.append(1) or real())
    text = [[torch.zeros(1, 77, 32), {}]]
    steps = 2
    for frames in (30, 16):
        trims.clear()
        latent = torch.zeros(frames, 4, 4, 6)
        comfy.sample.sample(
            model, torch.randn(latent.shape), steps, 7.5, "ddim", "ddim_uniform", text, text, latent, seed=0
        )
        expected = sum(
            len(windows_module.context_windows(frames, options.schedule, options.length, options.overlap, offset))
            for offset in windows_module.window_offsets(9, steps, options.length)
        )
        assert len(trims) == (expected if frames > options.length else 0), frames


@glibc
def test_core_context_windows_trim_before_every_window_too(comfy_host, monkeypatch):
    """Under core's Context Windows node each of its windows reaches the pack's wrapper on its own: each trims."""
    context = pack(comfy_host, "xdyna_comfy.context_windows")
    sampling = pack(comfy_host, "nodes.sampling_nodes")
    tiny = tiny_xdyna(comfy_host, seed=3)
    reference = random_reference(comfy_host, TINY_UNET, 4, 6, 0)
    model = (
        pack(comfy_host, "nodes.model_nodes")
        .XDynaApplyDynamicsAdapter.execute(tiny.model, tiny.weights, reference, 1.0)
        .args[0]
    )
    core_windows = comfy_host.nodes.NODE_CLASS_MAPPINGS["ContextWindowsManual"]
    windowed = core_windows.execute(
        model, 16, 4, "standard_static", 1, False, "flat", 0, False, causal_window_fix=False
    ).args[0]
    trims, core_calls = [], []
    real_trim, real_frames = context.release_freed_host_memory, context.core_window_frames
    monkeypatch.setattr(context, "release_freed_host_memory", lambda: trims.append(1) or real_trim())

    def frames_of(window):
        frames = real_frames(window)
        core_calls.append(frames)
        return frames

    monkeypatch.setattr(context, "core_window_frames", frames_of)
    text = [[torch.zeros(1, 77, 32), {}]]
    latent = sampling.XDynaInitLatent.execute(reference, 20, 7).args[0]
    comfy_host.nodes.NODE_CLASS_MAPPINGS["KSampler"]().sample(
        windowed, 7, 2, 7.5, "ddim", "ddim_uniform", text, text, latent
    )
    windows = [frames for frames in core_calls if frames is not None and len(frames) < 20]
    assert len(windows) >= 4  # two windows of 20 frames, two steps
    assert len(trims) == len(windows)
