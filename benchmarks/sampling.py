r"""X-Dyna sampling in ComfyUI: work done, seconds per step and peak memory, against the released schedule.

For a size, frame count and step count it prints the UNet frame-evaluations and the frame-evaluations of each
ControlNet the run made, the same counts for the released schedule (every window, both CFG branches, every
step; computed from the window plan), seconds per step, and peak memory: the process's peak RSS above the
inputs on every device (the driving frames and pose keypoints a user loads are built first; the peak is then
reset to the RSS holding them, so neither they nor the temporaries of building them count), and on a GPU also
CUDA `max_memory_allocated` (weights included). Each configuration runs in a fresh process.

    python benchmarks/sampling.py --frames 16 40                                  # tiny model, 64x64, CPU
    python benchmarks/sampling.py --frames 16 192 600 --width 512 --height 896 --steps 1 --hints render \
        --precision bf16 --attention pytorch                                      # CPU: ~2 min a window
    python benchmarks/sampling.py --layout sd15 --precision fp16 --frames 16 48 --width 512 --height 896  # GPU

On the CPU, `--attention pytorch` (ComfyUI's `--use-pytorch-cross-attention`) replaces the sub-quadratic
attention ComfyUI picks there, which is several times slower at 512x896; bf16 runs on the CPU's matrix units
where it has them.

`--hints tensor` feeds the ControlNets IMAGE batches (the user's own tensors, referenced); `--hints render`
feeds pose frames drawn from keypoints and an S-Face condition cut from the driving frames, a window at a time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402


def hints(args: argparse.Namespace, host):
    """Pose and S-Face hints for `args.frames` frames, in the chosen representation (from the pack as loaded)."""
    frames, height, width = args.frames[0], args.height, args.width
    if args.hints == "tensor":
        gen = torch.Generator().manual_seed(0)
        return torch.rand(frames, height, width, 3, generator=gen), torch.rand(frames, height, width, 6, generator=gen)
    return harness.rendered_hints(host, frames, height, width)


def child(args: argparse.Namespace) -> dict:
    host = harness.boot(args.attention)
    layout = harness.LAYOUTS[args.layout]
    setup = harness.build(host, layout, args.height, args.width, args.precision, controlnets=args.controlnets)
    frames = args.frames[0]
    pose = face = None
    if args.controlnets:
        pose, face = hints(args, host)
    cuda = torch.cuda.is_available()
    if cuda:
        torch.zeros(1, device="cuda")  # the CUDA context is the process's, not the run's (its libraries load later)
    # the inputs are held from here on; what building them cost on the way (temporaries) is not the run's
    baseline = harness.rss_bytes()
    resettable = harness.reset_peak_rss()
    positive, negative = harness.conditioning(setup, pose, face)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    with harness.counting(setup) as (model, work):
        start = time.perf_counter()
        harness.sample(setup, positive, negative, frames, args.steps, args.window, args.overlap, model=model)
        if cuda:
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
    released_unet, released_controlnet = harness.released_work(frames, args.steps, args.window, args.overlap)
    host_peak = harness.peak_rss_bytes() - (baseline if resettable else 0)
    return {
        "frames": frames,
        "seconds_per_step": elapsed / args.steps,
        "host_peak_bytes": host_peak,
        "host_peak_kind": "peak RSS above the inputs" if resettable else "peak RSS of the process (no /proc)",
        "gpu_peak_bytes": torch.cuda.max_memory_allocated() if cuda else None,
        "unet_frames": work.unet_frames,
        "controlnet_frames": sorted(work.controlnet_frames.values()),
        "released_unet_frames": released_unet,
        "released_controlnet_frames": released_controlnet if args.controlnets else 0,
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "attention": harness.attention_name(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, nargs="+", default=[16, 40])
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--window", type=int, default=16)
    parser.add_argument("--overlap", type=int, default=4)
    parser.add_argument("--layout", choices=list(harness.LAYOUTS), default="tiny", help="tiny or real SD1.5 sizes")
    parser.add_argument("--precision", choices=list(harness.PRECISION_COMPUTE), default="fp32")
    parser.add_argument("--no-controlnets", dest="controlnets", action="store_false")
    parser.add_argument("--hints", choices=("tensor", "render"), default="tensor")
    parser.add_argument(
        "--attention", choices=("default", "pytorch"), default="default", help="pytorch: --use-pytorch-cross-attention"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    rows = []
    for frames in args.frames:
        command = [sys.executable, __file__, "--child", "--frames", str(frames)]
        for name in ("width", "height", "steps", "window", "overlap", "layout", "precision", "hints", "attention"):
            command += [f"--{name}", str(getattr(args, name))]
        command += [] if args.controlnets else ["--no-controlnets"]
        out = subprocess.run(command, capture_output=True, text=True, env=os.environ)
        if out.returncode:
            raise SystemExit(f"{frames} frames failed:\n{out.stderr[-4000:]}")
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    first = rows[0]
    print(
        f"X-Dyna {args.layout} {args.precision} at {args.width}x{args.height}, {args.steps} steps, "
        f"windows {args.window}/{args.overlap}, hints {args.hints}, {first['attention']}, on {first['device']}"
    )
    print(
        f"{'frames':>7} {'s/step':>9} {'host MiB':>9} {'GPU MiB':>9} "
        f"{'UNet fr':>9} {'released':>9} {'CN fr':>8} {'released':>9}"
    )
    for row in rows:
        cn = row["controlnet_frames"][0] if row["controlnet_frames"] else 0
        gpu = "-" if row["gpu_peak_bytes"] is None else f"{row['gpu_peak_bytes'] / 2**20:.1f}"
        print(
            f"{row['frames']:>7} {row['seconds_per_step']:>9.3f} {row['host_peak_bytes'] / 2**20:>9.1f} {gpu:>9} "
            f"{row['unet_frames']:>9} {row['released_unet_frames']:>9} {cn:>8} {row['released_controlnet_frames']:>9}"
        )
    print(
        f"(host: {first['host_peak_kind']}; GPU: CUDA max_memory_allocated, weights included; "
        "CN fr: frame-evaluations per ControlNet)"
    )
    for key, name in (("host_peak_bytes", "host"), ("gpu_peak_bytes", "GPU")):
        if len(rows) > 1 and first[key] is not None and first[key] > 0:
            for row in rows[1:]:
                print(f"{name} peak at {row['frames']} frames / at {first['frames']}: {row[key] / first[key]:.3f}")


if __name__ == "__main__":
    main()
