"""Seconds per sampling step and peak memory of X-Dyna in ComfyUI, for a size and frame count.

Runs the pack's nodes (Apply Dynamics-Adapter + Temporal Sampler, optional pose and S-Face ControlNets) on
random weights in the official layouts, inside a real ComfyUI (COMFYUI_PATH or ~/ComfyUI). Each frame count
runs in a fresh process, so peak memory is per configuration: CUDA `max_memory_allocated` on a GPU, the
process's peak RSS on the CPU.

    python benchmarks/sampling.py --frames 16 64 --width 64 --height 64            # tiny model, CPU
    python benchmarks/sampling.py --sd15 --frames 16 64 --width 512 --height 896   # real sizes (GPU)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def child(args: argparse.Namespace) -> dict:
    sys.path.insert(0, str(REPO))
    import torch

    from tests.fixtures.official_layout import SD15_UNET, TINY_UNET
    from tests.host.comfy_host import ComfyHost, find_comfyui
    from tests.host.support_nodes import TinyControlNet
    from tests.host.xdyna_setup import pack, random_reference, tiny_xdyna

    path, where = find_comfyui()
    if path is None:
        raise SystemExit(f"no ComfyUI: {where}")
    host = ComfyHost(path, Path(tempfile.mkdtemp(prefix="xdyna-bench-")))
    layout = SD15_UNET if args.sd15 else TINY_UNET
    tiny = tiny_xdyna(host, seed=0, layout=layout, residual_gain=0.1, output_gain=0.1)
    h, w = args.height // 8, args.width // 8
    reference = random_reference(host, layout, h, w, seed=0)
    model = pack(host, "nodes.model_nodes").XDynaApplyDynamicsAdapter.execute(tiny.model, tiny.weights, reference, 1.0)
    model = model.args[0]
    sampling = pack(host, "nodes.sampling_nodes")
    text = [[torch.zeros(1, 77, layout.cross_attention_dim), {}]]
    positive = negative = text
    if args.controlnets:
        TinyControlNet.glue = pack(host, "nodes.comfy_glue")
        if args.sd15:
            raise SystemExit("--controlnets uses tiny ControlNets; combine it with the tiny model only")
        pose, face = TinyControlNet().load(0, 3)[0], TinyControlNet().load(1, 6)[0]
        positive, negative = sampling.XDynaApplyControlNets.execute(
            text,
            text,
            pose_strength=1.0,
            pose_start=0.0,
            pose_end=1.0,
            face_strength=1.0,
            face_start=0.0,
            face_end=1.0,
            pose_controlnet=pose,
            pose_images=torch.rand(args.frames[0], args.height, args.width, 3),
            face_controlnet=face,
            face_condition=torch.rand(args.frames[0], args.height, args.width, 6),
        ).args
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    sampling.XDynaTemporalSampler.execute(
        model,
        positive,
        negative,
        reference,
        args.frames[0],
        0,
        args.steps,
        7.5,
        "ddim",
        "ddim_uniform",
        args.window,
        args.overlap,
        "uniform_closed_loop",
        1.0,
    )
    elapsed = time.perf_counter() - start
    if torch.cuda.is_available():
        peak, kind = torch.cuda.max_memory_allocated(), "cuda_max_allocated"
    else:
        peak, kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "cpu_peak_rss"
    return {"frames": args.frames[0], "seconds_per_step": elapsed / args.steps, "peak_bytes": peak, "peak_kind": kind}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--window", type=int, default=16)
    parser.add_argument("--overlap", type=int, default=4)
    parser.add_argument("--sd15", action="store_true", help="real SD1.5 sizes (random weights)")
    parser.add_argument("--controlnets", action="store_true", help="add tiny pose and S-Face ControlNets")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    rows = []
    for frames in args.frames:
        command = [sys.executable, __file__, "--child", "--frames", str(frames)]
        for name in ("width", "height", "steps", "window", "overlap"):
            command += [f"--{name}", str(getattr(args, name))]
        command += ["--sd15"] * args.sd15 + ["--controlnets"] * args.controlnets
        out = subprocess.run(command, capture_output=True, text=True, env=os.environ, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"{'frames':>7} {'s/step':>9} {'peak MiB':>10}  ({rows[0]['peak_kind']})")
    for row in rows:
        print(f"{row['frames']:>7} {row['seconds_per_step']:>9.3f} {row['peak_bytes'] / 2**20:>10.1f}")
    if len(rows) > 1:
        print(
            f"peak at {rows[-1]['frames']} frames / peak at {rows[0]['frames']} frames: "
            f"{rows[-1]['peak_bytes'] / rows[0]['peak_bytes']:.3f}"
        )


if __name__ == "__main__":
    main()
