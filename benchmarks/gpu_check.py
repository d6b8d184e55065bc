"""One command for a machine with a CUDA GPU: the real-size X-Dyna model in fp16 and bf16, timed and checked.

Runs random weights at the released sizes (SD1.5 UNet with X-Dyna's parts, pose and S-Face ControlNets) at
512x896 for 16 and 48 frames, both ControlNets on, 2 steps, in bf16 and in fp16 (then 192 and 600 frames in
fp16, the long-video memory cases, while the time budget lasts), and prints seconds per step
and peak GPU memory (`torch.cuda.max_memory_allocated`, weights included; with the host RSS the run added
above the inputs, in a process that ran the configurations before it), the work done against the released
schedule, the fp16/bf16 deviation from fp32 on one UNet call, and one call with the X-Dyna weights half
offloaded (lowvram) against a full load, and the milliseconds per frame a ControlNet spends preparing its
hints on the GPU (`hint_prep.py`), and what ComfyUI planned for one window call (`memory_required`) beside
the weights it loaded, to set against the measured peak. Exits non-zero on any error. A configuration that would
start past `--deadline` seconds is skipped and says so, so the run ends within its time on the machine.

    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/gpu_check.py
    python benchmarks/gpu_check.py --comfyui-tarball ../shared/host/ComfyUI-0.33.0.tar.gz   # unpacks it first
    python benchmarks/gpu_check.py --smoke     # tiny model, small sizes, any device: checks the script itself
"""

from __future__ import annotations

import argparse
import os
import sys
import tarfile
import tempfile
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


def unpack(tarball: Path) -> Path:
    target = Path(tempfile.gettempdir()) / "xdyna-gpu-check-host"
    if not (target / "ComfyUI" / "main.py").is_file():
        with tarfile.open(tarball) as archive:
            archive.extractall(target, filter="data")
    return target / "ComfyUI"


def one_call(setup, frames: int, seed: int = 0) -> torch.Tensor:
    """eps of one UNet call (both CFG branches, one window) through ComfyUI's sampler."""
    from tests.host.xdyna_setup import comfy_eps

    gen = torch.Generator().manual_seed(seed)
    h, w = setup.reference.latent.shape[-2:]
    latent = torch.randn(frames, 4, h, w, generator=gen)
    noise = torch.randn(frames, 4, h, w, generator=gen)
    text = torch.zeros(1, 77, setup.layout.cross_attention_dim)
    return comfy_eps(setup.model, latent, noise, text, text, 0.0, 500)[0].float().cpu()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny model and sizes (checks the script anywhere)")
    parser.add_argument("--comfyui-tarball", type=Path, help="unpack this ComfyUI release and use it")
    parser.add_argument("--frames", type=int, nargs="+", default=[16, 48])
    parser.add_argument("--long-frames", type=int, nargs="*", default=[192, 600], help="then in fp16 only")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--deadline", type=float, default=480, help="seconds after which nothing more starts")
    args = parser.parse_args()
    if args.comfyui_tarball:
        os.environ["COMFYUI_PATH"] = str(unpack(args.comfyui_tarball))
    if not args.smoke and not torch.cuda.is_available():
        print("gpu_check: no CUDA device (use --smoke to check the script on this machine)")
        return 2

    import harness

    layout = harness.LAYOUTS["tiny" if args.smoke else "sd15"]
    width, height = (64, 64) if args.smoke else (512, 896)
    frames_list = [16, 20] if args.smoke else args.frames
    long_frames = [24] if args.smoke else args.long_frames
    host = harness.boot()
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    print(f"X-Dyna GPU check on {device}: {'tiny (smoke)' if args.smoke else 'real-size'} model at {width}x{height}")
    started = time.perf_counter()
    failures = 0
    call_frames = 16

    reference_eps = None
    try:
        fp32 = harness.build(host, layout, height, width, "fp32", controlnets=False)
        reference_eps = one_call(fp32, call_frames)
        del fp32
    except Exception:
        traceback.print_exc()
        failures += 1

    try:  # early: it is quick, and a run cut off at its time limit has it all the same
        import hint_prep

        rows, _ = hint_prep.measure(host, width, height, frames=12, rounds=3)
        for name, ms in rows.items():
            print(f"hint preparation, {name}: {ms:.2f} ms/frame")
    except Exception:
        traceback.print_exc()
        failures += 1

    def in_time(what: str) -> bool:
        if time.perf_counter() - started <= args.deadline:
            return True
        print(f"{what}: skipped, past the {args.deadline:.0f} s budget")
        return False

    for precision, frame_counts in (("bf16", frames_list), ("fp16", frames_list + long_frames)):
        if not in_time(precision):
            continue
        try:
            setup = harness.build(host, layout, height, width, precision)
            if reference_eps is not None:
                eps = one_call(setup, call_frames)
                error = (eps - reference_eps).abs().max().item()
                scale = reference_eps.abs().max().item()
                print(
                    f"{precision}: one UNet call ({call_frames} frames) vs fp32: max |diff| {error:.4g} (of {scale:.3g})"
                )
                if not torch.isfinite(eps).all():
                    raise RuntimeError(f"{precision} eps is not finite")
            for frames in frame_counts:
                if not in_time(f"{precision}: {frames} frames"):
                    continue
                try:  # one length failing (out of memory, say) leaves the others to run
                    sampling_run(setup, precision, frames, args.steps, height, width)
                except Exception:
                    traceback.print_exc()
                    failures += 1
            if precision == "fp16" and in_time("fp16: half offloaded"):
                lowvram_check(setup, call_frames)
            del setup
        except Exception:
            traceback.print_exc()
            failures += 1
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    print(f"gpu_check: {'FAILED' if failures else 'ok'} in {time.perf_counter() - started:.0f} s")
    return 1 if failures else 0


def sampling_run(setup, precision: str, frames: int, steps: int, height: int, width: int) -> None:
    """One sampling run of `frames` frames with both ControlNets: its speed, peak memory and work, printed."""
    import harness

    gen = torch.Generator().manual_seed(frames)
    pose = torch.rand(frames, height, width, 3, generator=gen)
    face = torch.rand(frames, height, width, 6, generator=gen)
    positive, negative = harness.conditioning(setup, pose, face)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    host_start, resettable = harness.rss_bytes(), harness.reset_peak_rss()
    with harness.counting(setup) as (model, work):
        start = time.perf_counter()
        out = harness.sample(setup, positive, negative, frames, steps, model=model)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        seconds = (time.perf_counter() - start) / steps
    if not torch.isfinite(out).all():
        raise RuntimeError(f"{precision}, {frames} frames: the latents are not finite")
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else float("nan")
    host_mib = (harness.peak_rss_bytes() - host_start) / 2**20 if resettable else float("nan")
    released_unet, released_cn = harness.released_work(frames, steps)
    cn = max(work.controlnet_frames.values(), default=0)
    print(
        f"{precision}: {frames} frames, {steps} steps: {seconds:.2f} s/step, peak {peak:.2f} GiB "
        f"(host RSS {host_mib:+.0f} MiB), "
        f"UNet frames {work.unet_frames} (released {released_unet}), "
        f"frames per ControlNet {cn} (released {released_cn})"
    )
    print(f"{precision}: {frames} frames: {planned_memory(setup, frames)}")


def planned_memory(setup, frames: int, window: int = 16) -> str:
    """What ComfyUI's memory manager planned for one window's UNet call, beside the weights it had loaded: set
    against the measured peak, it says whether the plan (SD1.5's `memory_usage_factor`) fits X-Dyna."""
    import comfy.model_management
    import harness

    window_noise_shape = harness.pack(setup.host, "xdyna_comfy.context_windows").window_noise_shape
    h, w = setup.reference.latent.shape[-2:]
    per_branch = window_noise_shape([frames, 4, h, w], window)
    both = [2 * per_branch[0], *per_branch[1:]]
    base = setup.model.model
    loaded = sum(m.model_loaded_memory() for m in comfy.model_management.current_loaded_models)
    return (
        f"ComfyUI plans {base.memory_required(both) / 2**30:.2f} GiB for a window call of both branches "
        f"({base.memory_required(per_branch) / 2**30:.2f} for one), memory_usage_factor {base.memory_usage_factor}; "
        f"weights loaded {loaded / 2**30:.2f} GiB"
    )


def lowvram_check(setup, frames: int) -> None:
    """One call with the X-Dyna weights loaded at half their size (the rest cast in from the offload device)."""
    import comfy.model_management

    full = one_call(setup, frames, seed=1)
    real = comfy.model_management.load_models_gpu
    components = type(setup.tiny.weights.components)

    def squeezed(models, *args, **kwargs):
        real(models, *args, **kwargs)
        for patcher in models:
            if isinstance(patcher.model, components):
                patcher.unpatch_model(patcher.offload_device)
                patcher.load(patcher.load_device, lowvram_model_memory=patcher.model_size() // 2)

    comfy.model_management.load_models_gpu = squeezed
    try:
        offloaded = one_call(setup, frames, seed=1)
    finally:
        comfy.model_management.load_models_gpu = real
    print(
        f"fp16: X-Dyna weights half offloaded vs fully loaded: max |diff| {(offloaded - full).abs().max().item():.3g}"
    )


if __name__ == "__main__":
    sys.exit(main())
