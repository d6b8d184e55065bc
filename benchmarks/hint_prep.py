r"""Time a ControlNet spends preparing its hints: milliseconds per frame, per hint kind, on the sampling device.

Every step, each X-Dyna ControlNet asks for the hints of the frames it evaluates (a window's new frames): pose
frames drawn from keypoints, S-Face canvases cut from the driving frames (the part they copy fitted to the
generation size when the video has another size; also placed onto a retargeted head, scaled, as Pose
Retarget's limbs and global modes make them), or IMAGE hints indexed from the user's tensor; then they are
normalised (the release's per-stream min-max) and cast to the ControlNet's dtype on the compute device. This
runs the pack's own `XDynaControlNet._hints` on the ControlNets that X-Dyna Apply ControlNets builds, a window
of frames at a time, on CUDA when there is one (synchronised, so the figure is the wall time a step waits),
and prints the best of a few rounds per frame.

    python benchmarks/hint_prep.py                                   # 512x896, 12 frames a call
    python benchmarks/hint_prep.py --driving 1280x720 --threads 1    # footage of another size, one CPU thread
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402


def seconds_per_frame(control, frames: int, latent: torch.Tensor, dtype: torch.dtype, rounds: int) -> float:
    """Best-of-`rounds` wall time of one `_hints` call for `frames` frames, divided by the frames."""
    cuda = latent.device.type == "cuda"
    best = float("inf")
    for r in range(rounds + 1):  # the first round warms up (allocator, kernels)
        window = [(r * frames + k) % control.hint_frames.num_frames for k in range(frames)]
        start = time.perf_counter()
        hint = control._hints(window, latent, dtype)
        if cuda:
            torch.cuda.synchronize()
        if r:
            best = min(best, time.perf_counter() - start)
        del hint
    return best / frames


def measure(host, width: int, height: int, frames: int, rounds: int, driving_size=None, precision: str = "fp16"):
    """`{hint kind: ms per frame}` for rendered pose, S-Face, and IMAGE-tensor hints at `width × height`."""
    setup = harness.build(host, harness.LAYOUTS["tiny"], height, width, precision)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = harness.PRECISION_COMPUTE[precision][1]
    latent = torch.zeros(frames, 4, height // 8, width // 8, device=device)
    clip = max(4 * frames, 16)
    pose, face = harness.rendered_hints(host, clip, height, width, driving_size)
    # the same faces moved onto a retargeted head 10% larger (Pose Retarget's limbs/global modes)
    placement = torch.tensor([1.1, 0.0, 0.0, 1.1, -0.05 * width, -0.03 * height], dtype=torch.float64)
    placed = type(face)(
        face.driving, width, height, face.boxes, face.centres, face.status, placements=placement.expand(clip, 6)
    )
    gen = torch.Generator().manual_seed(0)
    images = (torch.rand(clip, height, width, 3, generator=gen), torch.rand(clip, height, width, 6, generator=gen))
    rows = {}
    for kind, hints in (("rendered", (pose, face)), ("IMAGE tensor", images), ("placed", (None, placed))):
        positive, _ = harness.conditioning(setup, *hints)
        options = [[entry[1] for entry in positive]]  # CONDITIONING's option dicts, as the sampler holds them
        for control in harness.pack(host, "xdyna_comfy.controlnets").controls_in(options):
            rows[f"{control.xdyna_name}, {kind}"] = 1e3 * seconds_per_frame(control, frames, latent, dtype, rounds)
    return rows, device


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--height", type=int, default=896)
    parser.add_argument("--frames", type=int, default=12, help="frames per call (a window's new frames: 12)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--driving", default=None, help="WxH of the driving frames (default: the generation size)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    parser.add_argument("--precision", choices=list(harness.PRECISION_COMPUTE), default="fp16")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    driving = tuple(int(v) for v in args.driving.lower().split("x")) if args.driving else None
    rows, device = measure(harness.boot(), args.width, args.height, args.frames, args.rounds, driving, args.precision)
    where = torch.cuda.get_device_name() if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(
        f"X-Dyna hint preparation at {args.width}x{args.height}, driving {args.driving or 'at that size'}, "
        f"{args.frames} frames a call, {args.precision}, on {where}"
    )
    for name, ms in rows.items():
        print(f"{name:>28}: {ms:8.2f} ms/frame")


if __name__ == "__main__":
    main()
