"""Video nodes: ControlNets on the conditioning, the initial latent, and the temporal sampler."""

from __future__ import annotations

import torch
from comfy_api.latest import io

from ..xdyna_comfy import folders, loaders
from ..xdyna_comfy.context_windows import ContextOptions
from ..xdyna_comfy.controlnets import XDynaControlNet, check_controlnet, normalisation_ranges
from ..xdyna_comfy.inputs import require_control_net, require_model, require_xdyna_model
from ..xdyna_comfy.sampling import XDYNA_SCHEDULER, sample_video, sampler_names, scheduler_names
from ..xdyna_comfy.sigmas import released_sigmas
from ..xdyna_core.checkpoints import load_state_dict_file
from ..xdyna_core.hints import HintFrames, TensorHintFrames
from ..xdyna_core.latents import initial_latent, mask_generator
from ..xdyna_core.reference import XDynaReference
from ..xdyna_core.schedule import MAX_STEPS
from ..xdyna_core.validation import (
    XDynaInputError,
    finite_number,
    hint_frame_count,
    image_batch,
    percent_range,
    require,
    require_conditioning,
    require_finite,
    require_reference,
    seed_value,
)
from ..xdyna_core.windows import CONTEXT_SCHEDULES, DEFAULT_OVERLAP, DEFAULT_WINDOW_LENGTH, MAX_WINDOW_LENGTH
from .types import FaceCondition, PoseFrames, XDynaReferenceType

CATEGORY = "X-Dyna"
SD15_LATENT_SCALE = 0.18215
MAX_FRAMES = 4096
LOAD_CONTROLNET = "X-Dyna Load ControlNet"
APPLY_CONTROLNETS = "X-Dyna Apply ControlNets"
INIT_LATENT = "X-Dyna Initial Latent"
SCHEDULER = "X-Dyna Scheduler"
TEMPORAL_SAMPLER = "X-Dyna Temporal Sampler"


# --- ControlNets --------------------------------------------------------------------------------------------


class XDynaLoadControlNet(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="XDyna_LoadControlNet",
            display_name=LOAD_CONTROLNET,
            category=CATEGORY,
            description=(
                "Loads X-Dyna's pose or S-Face ControlNet (diffusers layout, .ckpt read as tensors only, or "
                ".safetensors) as a core CONTROL_NET. Core's Load ControlNet Model reads the official files too."
            ),
            inputs=[
                io.Combo.Input(
                    "control_net_name",
                    options=folders.model_files("controlnet"),
                    tooltip="controlnet-checkpoint-epoch-5.ckpt (pose) or controlnet-face-checkpoint-epoch-2.ckpt "
                    "(S-Face) in models/controlnet.",
                ),
                io.Combo.Input("precision", options=list(loaders.PRECISIONS), default="auto"),
            ],
            outputs=[io.ControlNet.Output()],
        )

    @classmethod
    def execute(cls, control_net_name: str, precision: str) -> io.NodeOutput:
        path = folders.model_path("controlnet", control_net_name)
        return io.NodeOutput(loaders.build_sd15_controlnet(load_state_dict_file(path), precision, str(path)))


def apply_controlnet(positive, negative, control_net, hints: HintFrames, strength, start, end, name, normalize):
    """Attach `control_net` with per-frame `hints` to both conditionings (chained after any ControlNet already
    there, so outputs sum), the same hints for both CFG branches, as released.

    The ControlNet runs as an XDynaControlNet: each frame's residuals once per step, shared by the branches.
    """
    ranges = normalisation_ranges(hints) if normalize else None
    made: dict[int, object] = {}
    result = []
    for conditioning in (positive, negative):
        updated = []
        for embedding, options in conditioning:
            options = options.copy()
            previous = options.get("control")
            key = id(previous)
            if key not in made:
                control = XDynaControlNet.adopt(
                    control_net.copy().set_cond_hint(None, strength, (start, end)), hints, ranges, name
                )
                control.set_previous_controlnet(previous)
                made[key] = control
            options["control"] = made[key]
            options["control_apply_to_uncond"] = False
            updated.append([embedding, options])
        result.append(updated)
    return result[0], result[1]


class XDynaApplyControlNets(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        def range_inputs(prefix: str, label: str) -> list:
            return [
                io.Float.Input(
                    f"{prefix}_strength",
                    default=1.0,
                    min=0.0,
                    max=3.0,
                    step=0.05,
                    tooltip=f"Scale of the {label} ControlNet's residuals (1 as released).",
                ),
                io.Float.Input(
                    f"{prefix}_start",
                    default=0.0,
                    min=0.0,
                    max=1.0,
                    step=0.01,
                    tooltip=f"Fraction of the sampling at which the {label} ControlNet starts.",
                ),
                io.Float.Input(
                    f"{prefix}_end",
                    default=1.0,
                    min=0.0,
                    max=1.0,
                    step=0.01,
                    tooltip=f"Fraction of the sampling at which the {label} ControlNet stops.",
                ),
            ]

        return io.Schema(
            node_id="XDyna_ApplyControlNets",
            display_name=APPLY_CONTROLNETS,
            category=CATEGORY,
            description=(
                "Steers every frame with the pose ControlNet (rendered skeletons) and the S-Face ControlNet "
                "(face conditions). Each frame gets its own hint; the reference frame gets none."
            ),
            inputs=[
                io.Conditioning.Input("positive"),
                io.Conditioning.Input("negative"),
                io.ControlNet.Input(
                    "pose_controlnet",
                    optional=True,
                    tooltip="controlnet-checkpoint-epoch-5.ckpt, loaded with Load ControlNet Model.",
                ),
                io.MultiType.Input(
                    "pose_images",
                    types=[io.Image, PoseFrames],
                    optional=True,
                    tooltip="One rendered pose per frame, at W×H: X-Dyna Render Pose's pose_frames (rendered a "
                    "window at a time) or any IMAGE batch.",
                ),
                *range_inputs("pose", "pose"),
                io.ControlNet.Input(
                    "face_controlnet",
                    optional=True,
                    tooltip="controlnet-face-checkpoint-epoch-2.ckpt, loaded with Load ControlNet Model.",
                ),
                FaceCondition.Input(
                    "face_condition", optional=True, tooltip="The S-Face condition from X-Dyna Face Cropper."
                ),
                *range_inputs("face", "S-Face"),
                io.Boolean.Input(
                    "normalize_hints",
                    default=True,
                    tooltip="Min-max normalise each hint stream over the clip, as the official code does.",
                ),
            ],
            outputs=[io.Conditioning.Output(display_name="positive"), io.Conditioning.Output(display_name="negative")],
        )

    @classmethod
    def execute(
        cls,
        positive,
        negative,
        pose_strength,
        pose_start,
        pose_end,
        face_strength,
        face_start,
        face_end,
        normalize_hints=True,
        pose_controlnet=None,
        pose_images=None,
        face_controlnet=None,
        face_condition=None,
    ) -> io.NodeOutput:
        positive = require_conditioning(positive, APPLY_CONTROLNETS, "positive")
        negative = require_conditioning(negative, APPLY_CONTROLNETS, "negative")
        streams = (
            ("pose", "pose ControlNet", pose_controlnet, "pose_images", pose_images, 3),
            ("face", "S-Face ControlNet", face_controlnet, "face_condition", face_condition, 6),
        )
        settings = {"pose": (pose_strength, pose_start, pose_end), "face": (face_strength, face_start, face_end)}
        for prefix, name, control_net, hint_input, frames, channels in streams:
            strength = finite_number(settings[prefix][0], APPLY_CONTROLNETS, f"{prefix}_strength", 0.0, 3.0)
            start, end = percent_range(*settings[prefix][1:], APPLY_CONTROLNETS, prefix)
            if (control_net is None) != (frames is None):
                missing = "its hint frames" if frames is None else "the ControlNet model"
                raise XDynaInputError(
                    f"{APPLY_CONTROLNETS}: the {name} needs both a ControlNet and hint frames; {missing} is not "
                    f"connected: connect both {prefix}_controlnet and {hint_input}, or neither"
                )
            if control_net is None or strength == 0:
                continue
            control_net = require_control_net(control_net, APPLY_CONTROLNETS, f"{prefix}_controlnet")
            check_controlnet(control_net, name, channels)
            hints = hint_frames_of(frames, name, hint_input, channels)
            if hints.channels != channels:
                raise XDynaInputError(
                    f"{APPLY_CONTROLNETS}: the {hint_input} input has {hints.channels} channels per pixel, but the "
                    f"{name} takes {channels}; connect "
                    + (
                        "rendered poses (X-Dyna Render Pose)"
                        if channels == 3
                        else "X-Dyna Face Cropper's face_condition"
                    )
                )
            positive, negative = apply_controlnet(
                positive, negative, control_net, hints, strength, start, end, name, normalize_hints
            )
        return io.NodeOutput(positive, negative)


def hint_frames_of(value, name: str, hint_input: str = "hints", channels: int = 3) -> HintFrames:
    """The hints of an IMAGE batch, X-Dyna pose frames or an S-Face condition, as HintFrames (never copied).

    A tensor is checked once here (layout, dtype, finiteness; RGB conversions for pose images); X-Dyna's own
    hint frames are drawn from keypoints and boxes and are finite by construction.
    """
    if isinstance(value, HintFrames):
        return value
    source = "X-Dyna Render Pose's pose_frames or an IMAGE batch" if channels == 3 else "X-Dyna Face Cropper"
    value = require(value, torch.Tensor, APPLY_CONTROLNETS, hint_input, f"hint frames for the {name}", source)
    checked = image_batch(
        value, APPLY_CONTROLNETS, hint_input, channels=3 if channels == 3 else None, check_range=False, to_float=False
    )
    return TensorHintFrames(checked)


SAMPLED_NAN_FIX = (
    "the model overflowed while sampling (X-Dyna's UNet can in fp16): load it with precision bf16 or fp32 in "
    "X-Dyna Load Model"
)


# --- initial latent and sampler ------------------------------------------------------------------------------


def frame_count(frames: int, pose_images, node: str = TEMPORAL_SAMPLER) -> int:
    count = hint_frame_count(pose_images, node, "pose_images") if pose_images is not None else frames
    if count < 1:
        raise ValueError(f"the video must have at least 1 frame, got {count}; set frames to 1 or more")
    return count


def xdyna_initial_latent(reference: XDynaReference, frames: int, seed: int) -> dict:
    """LATENT of the reference repeated over the frames, blur-mixed by a seeded mask (docs/xdyna_model.md §4), unnoised."""
    scaled = reference.latent.float() * SD15_LATENT_SCALE
    latent = initial_latent(scaled, frames, mask_generator(seed)) / SD15_LATENT_SCALE
    return {"samples": latent.contiguous()}


class XDynaScheduler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="XDyna_Scheduler",
            display_name=SCHEDULER,
            category=CATEGORY,
            description=(
                "The released DDIM timesteps (961, 921, ..., 1 for 25 steps) as SIGMAS for SamplerCustom or "
                "SamplerCustomAdvanced, for any step count. Core's ddim_uniform gives the same only when the "
                "steps divide 1000 (10, 20, 25, 40, 50, ...)."
            ),
            inputs=[
                io.Model.Input("model", tooltip="The MODEL from X-Dyna Apply Dynamics-Adapter (its sigmas are used)."),
                io.Int.Input("steps", default=25, min=1, max=MAX_STEPS, tooltip="Sampling steps (25 as released)."),
                io.Float.Input(
                    "denoise",
                    default=1.0,
                    min=0.0,
                    max=1.0,
                    step=0.01,
                    tooltip="Below 1 runs the last steps of a longer schedule, as KSampler does.",
                ),
            ],
            outputs=[io.Sigmas.Output()],
        )

    @classmethod
    def execute(cls, model, steps: int, denoise: float) -> io.NodeOutput:
        model = require_model(model, SCHEDULER, source="the MODEL output of X-Dyna Apply Dynamics-Adapter")
        denoise = finite_number(denoise, SCHEDULER, "denoise", 0.0, 1.0)
        return io.NodeOutput(released_sigmas(model, steps, denoise))


class XDynaInitLatent(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="XDyna_InitLatent",
            display_name=INIT_LATENT,
            category=CATEGORY,
            description=(
                "The latent X-Dyna starts from: the reference repeated over the frames, mixed with a blurred "
                "copy by a seeded mask. Feed it, with the same seed, to SamplerCustom with X-Dyna Scheduler's "
                "sigmas (or to a stock KSampler with ddim / ddim_uniform when the steps divide 1000) to get what "
                "X-Dyna Temporal Sampler gives."
            ),
            inputs=[
                XDynaReferenceType.Input("reference"),
                io.Int.Input("frames", default=16, min=1, max=MAX_FRAMES, tooltip="Number of frames to generate."),
                io.MultiType.Input(
                    "pose_images",
                    types=[io.Image, PoseFrames],
                    optional=True,
                    tooltip="If connected, one frame per pose image.",
                ),
                io.Int.Input(
                    "seed",
                    default=0,
                    min=0,
                    max=0xFFFFFFFFFFFFFFFF,
                    control_after_generate=True,
                    tooltip="Seed of the blur mask; use the sampler's seed.",
                ),
            ],
            outputs=[io.Latent.Output()],
        )

    @classmethod
    def execute(cls, reference, frames, seed, pose_images=None) -> io.NodeOutput:
        reference = require_reference(reference, INIT_LATENT)
        seed = seed_value(seed, INIT_LATENT)
        return io.NodeOutput(xdyna_initial_latent(reference, frame_count(frames, pose_images, INIT_LATENT), seed))


class XDynaTemporalSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="XDyna_TemporalSampler",
            display_name=TEMPORAL_SAMPLER,
            category=CATEGORY,
            description=(
                "Samples an X-Dyna video of any length: overlapping windows of frames, averaged, with the "
                "released settings as defaults (DDIM, 25 steps, cfg 7.5, windows of 16 overlapping by 4)."
            ),
            inputs=[
                io.Model.Input("model", tooltip="The MODEL from X-Dyna Apply Dynamics-Adapter."),
                io.Conditioning.Input("positive"),
                io.Conditioning.Input("negative"),
                XDynaReferenceType.Input("reference"),
                io.Int.Input("frames", default=16, min=1, max=MAX_FRAMES, tooltip="Frames to generate."),
                io.MultiType.Input(
                    "pose_images",
                    types=[io.Image, PoseFrames],
                    optional=True,
                    tooltip="If connected, the frame count is taken from it.",
                ),
                io.Int.Input(
                    "seed",
                    default=0,
                    min=0,
                    max=0xFFFFFFFFFFFFFFFF,
                    control_after_generate=True,
                    tooltip="Seeds the noise, the blur mask and the window offsets: same seed, same video.",
                ),
                io.Int.Input("steps", default=25, min=1, max=MAX_STEPS, tooltip="Sampling steps (25 as released)."),
                io.Float.Input("cfg", default=7.5, min=0.0, max=100.0, step=0.1, round=0.01),
                io.Combo.Input("sampler_name", options=sampler_names(), default="ddim"),
                io.Combo.Input(
                    "scheduler",
                    options=scheduler_names(),
                    default=XDYNA_SCHEDULER,
                    tooltip="xdyna_ddim: the released DDIM timesteps for any step count. The others are "
                    "ComfyUI's schedulers as they are (its ddim_uniform equals the release only when the steps "
                    "divide 1000).",
                ),
                io.Int.Input(
                    "window_length",
                    default=DEFAULT_WINDOW_LENGTH,
                    min=1,
                    max=MAX_WINDOW_LENGTH,
                    tooltip="Frames per window (16 as released; the motion modules take at most 24).",
                ),
                io.Int.Input(
                    "window_overlap",
                    default=DEFAULT_OVERLAP,
                    min=0,
                    max=MAX_WINDOW_LENGTH - 1,
                    tooltip="Frames shared by neighbouring windows (4 as released).",
                ),
                io.Combo.Input(
                    "schedule",
                    options=list(CONTEXT_SCHEDULES),
                    default="uniform_closed_loop",
                    tooltip="uniform_closed_loop: as released (wrapping, shifted every step). "
                    "static: fixed windows, no wrap.",
                ),
                io.Float.Input("denoise", default=1.0, min=0.0, max=1.0, step=0.01),
            ],
            outputs=[io.Latent.Output()],
        )

    @classmethod
    def execute(
        cls,
        model,
        positive,
        negative,
        reference,
        frames,
        seed,
        steps,
        cfg,
        sampler_name,
        scheduler,
        window_length,
        window_overlap,
        schedule,
        denoise,
        pose_images=None,
    ) -> io.NodeOutput:
        model = require_xdyna_model(model, TEMPORAL_SAMPLER)
        positive = require_conditioning(positive, TEMPORAL_SAMPLER, "positive")
        negative = require_conditioning(negative, TEMPORAL_SAMPLER, "negative")
        reference = require_reference(reference, TEMPORAL_SAMPLER)
        seed = seed_value(seed, TEMPORAL_SAMPLER)
        cfg = finite_number(cfg, TEMPORAL_SAMPLER, "cfg", 0.0, 100.0)
        denoise = finite_number(denoise, TEMPORAL_SAMPLER, "denoise", 0.0, 1.0)
        count = frame_count(frames, pose_images)
        latent = xdyna_initial_latent(reference, count, seed)["samples"]
        windows = ContextOptions(window_length, window_overlap, schedule, seed)
        args = (seed, steps, cfg, sampler_name, scheduler, denoise, windows)
        samples = sample_video(model, positive, negative, latent, *args)
        require_finite(samples, TEMPORAL_SAMPLER, "the sampled video", SAMPLED_NAN_FIX)
        return io.NodeOutput({"samples": samples})


NODES = [XDynaLoadControlNet, XDynaApplyControlNets, XDynaInitLatent, XDynaScheduler, XDynaTemporalSampler]
