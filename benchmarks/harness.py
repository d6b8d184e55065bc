"""What the benchmarks share: a booted ComfyUI with the pack, random-weight X-Dyna models at any size, work counters.

Random weights come from the test fixtures (the official key layouts, seeded); nothing is downloaded. The
counters observe ComfyUI's own calls: UNet frames through a DIFFUSION_MODEL wrapper inside the X-Dyna one
(so the reference frames count), ControlNet frames at each ControlNet network's forward.
"""

from __future__ import annotations

import resource
import sys
import tempfile
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.fixtures.official_layout import SD15_UNET, TINY_UNET, UNetLayout  # noqa: E402
from tests.fixtures.weights import controlnet_state_dict  # noqa: E402
from tests.host.comfy_host import ComfyHost, find_comfyui  # noqa: E402
from tests.host.xdyna_setup import apply_controlnets, device_computes_in, pack, random_reference, tiny_xdyna  # noqa: E402

LAYOUTS = {"tiny": TINY_UNET, "sd15": SD15_UNET}


def boot(attention: str = "default") -> ComfyHost:
    """ComfyUI with the pack; `attention="pytorch"` is ComfyUI's `--use-pytorch-cross-attention` (on the CPU
    ComfyUI otherwise picks its sub-quadratic attention, which is slow at 512x896)."""
    path, where = find_comfyui()
    if path is None:
        raise SystemExit(f"no ComfyUI: {where}")
    cli = {"use_pytorch_cross_attention": True} if attention == "pytorch" else {}
    return ComfyHost(path, Path(tempfile.mkdtemp(prefix="xdyna-bench-")), cli)


def attention_name() -> str:
    """The attention function ComfyUI picked (after `boot`), e.g. `attention_pytorch`."""
    return sys.modules["comfy.ldm.modules.attention"].optimized_attention.__name__


@dataclass
class Setup:
    host: ComfyHost
    layout: UNetLayout
    model: object  # the patched MODEL
    reference: object
    pose: object | None = None
    face: object | None = None
    tiny: object = None


def build(host: ComfyHost, layout: UNetLayout, height: int, width: int, precision: str = "fp32", controlnets=True):
    """The patched X-Dyna MODEL at `layout`'s sizes, its reference, and pose / S-Face ControlNets of the same widths."""
    _, compute = PRECISION_COMPUTE[precision]
    # on a GPU ComfyUI decides for itself; on the CPU it is made to answer as a GPU computing in `compute` would
    with nullcontext() if torch.cuda.is_available() else device_computes_in(compute):
        tiny = tiny_xdyna(host, seed=0, layout=layout, residual_gain=0.1, output_gain=0.1, precision=precision)
        glue = pack(host, "xdyna_comfy.loaders")
        pose = face = None
        if controlnets:
            pose = glue.build_sd15_controlnet(controlnet_state_dict(layout, 3, seed=1), precision)
            face = glue.build_sd15_controlnet(controlnet_state_dict(layout, 6, seed=2), precision)
    reference = random_reference(host, layout, height // 8, width // 8, seed=0)
    node = pack(host, "nodes.model_nodes").XDynaApplyDynamicsAdapter
    model = node.execute(tiny.model, tiny.weights, reference, 1.0).args[0]
    return Setup(host, layout, model, reference, pose, face, tiny)


# precision widget value → (weights, compute) as a GPU would run it; fp32 computes in fp32 everywhere
PRECISION_COMPUTE = {"fp32": ("fp32", torch.float32), "fp16": ("fp16", torch.float16), "bf16": ("bf16", torch.bfloat16)}


def rendered_hints(host: ComfyHost, frames: int, height: int, width: int, driving_size: tuple[int, int] | None = None):
    """Pose frames drawn from random keypoints and an S-Face condition cut from random driving frames, rendered
    a window at a time by the pack (`driving_size`: (width, height) of the driving frames, fitted to the
    generation size when it differs; the generation size by default)."""
    import numpy as np

    condition = pack(host, "xdyna_core.face.condition")
    keypoints = pack(host, "xdyna_core.pose.keypoints")
    pose_frames = pack(host, "xdyna_core.pose.pose_frames")
    gen = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)
    body = np.column_stack([rng.uniform(0.2, 0.8, 18) * width, rng.uniform(0.1, 0.9, 18) * height, np.ones(18)])
    poses = [keypoints.PoseFrame(width, height, [keypoints.PersonPose(body + [i % 7, 0, 0])]) for i in range(frames)]
    source_width, source_height = driving_size or (width, height)
    driving = (torch.rand(frames, source_height, source_width, 3, generator=gen) * 255).round().div(255)
    box = torch.tensor([width // 4, height // 8, 3 * width // 4, height // 2])
    centres = torch.tensor([[width // 3, height // 4], [2 * width // 3, height // 4], [width // 2, height // 3]])
    face = condition.SFaceCondition(
        driving, width, height, box.expand(frames, 4), centres.expand(frames, 3, 2), ["detected"] * frames
    )
    return pose_frames.PoseHintFrames(poses, width, height), face


def conditioning(setup: Setup, pose_hints=None, face_hints=None):
    text = [[torch.zeros(1, 77, setup.layout.cross_attention_dim), {}]]
    if pose_hints is None and face_hints is None:
        return text, text
    return apply_controlnets(
        setup.host,
        text,
        text,
        pose_controlnet=setup.pose if pose_hints is not None else None,
        pose_images=pose_hints,
        face_controlnet=setup.face if face_hints is not None else None,
        face_condition=face_hints,
    )


def sample(setup: Setup, positive, negative, frames: int, steps: int, window=16, overlap=4, model=None):
    sampler = pack(setup.host, "nodes.sampling_nodes").XDynaTemporalSampler
    args = (model or setup.model, positive, negative, setup.reference, frames, 0, steps, 7.5, "ddim", "xdyna_ddim")
    return sampler.execute(*args, window, overlap, "uniform_closed_loop", 1.0).args[0]["samples"]


@dataclass
class Work:
    unet_frames: int = 0
    controlnet_frames: dict = field(default_factory=dict)  # network id → frames


@contextmanager
def counting(setup: Setup):
    """Count UNet frames (reference frames included) and each ControlNet network's frames while sampling."""
    import comfy.cldm.cldm
    import comfy.patcher_extension

    work = Work()
    model = setup.model.clone()

    def unet(executor, x, *args, **kwargs):
        work.unet_frames += x.shape[0]
        return executor(x, *args, **kwargs)

    model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "xdyna_bench", unet)
    real = comfy.cldm.cldm.ControlNet.forward

    def controlnet(self, x, *args, **kwargs):
        work.controlnet_frames[id(self)] = work.controlnet_frames.get(id(self), 0) + x.shape[0]
        return real(self, x, *args, **kwargs)

    comfy.cldm.cldm.ControlNet.forward = controlnet
    try:
        yield model, work
    finally:
        comfy.cldm.cldm.ControlNet.forward = real


def released_work(frames: int, steps: int, window: int = 16, overlap: int = 4, offset: int = 0) -> tuple[int, int]:
    """UNet frames and frames per ControlNet the release evaluates: every window, both branches, every step."""
    sys.path.insert(0, str(REPO))
    from xdyna_core.windows import context_windows

    plan = context_windows(frames, "uniform_closed_loop", window, overlap, offset)
    per_step_unet = sum(2 * (len(w) + 1) for w in plan)
    per_step_controlnet = sum(2 * len(w) for w in plan)
    return per_step_unet * steps, per_step_controlnet * steps


def _status_bytes(field: str) -> int | None:
    """A `/proc/self/status` memory field (`VmRSS`, `VmHWM`) in bytes; None where there is no /proc."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def rss_bytes() -> int:
    """The process's resident memory now."""
    now = _status_bytes("VmRSS")
    return now if now is not None else peak_rss_bytes()


def reset_peak_rss() -> bool:
    """Start the peak-RSS count afresh from the present RSS (Linux: `clear_refs` 5); False where not possible,
    and then the peak includes whatever came before (building the inputs, say)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_rss_bytes() -> int:
    """The process's peak resident memory since the start or the last `reset_peak_rss`."""
    peak = _status_bytes("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
