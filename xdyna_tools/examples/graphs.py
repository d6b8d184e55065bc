"""The example workflows, described once: nodes, widget values that differ from the defaults, links, groups.

`xdyna_tools.examples.build` writes each in ComfyUI's two formats, with its thumbnail. Model file names come
from the pack's weights table (`xdyna_core.weights_manifest`), so the workflows, the README, X-Dyna Check Weights
and the front-end's missing-models panel (the `models` metadata, `model_metadata`) name the same files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from xdyna_core.weights_manifest import WEIGHTS

# Official file names, from the one weights table (README, X-Dyna Check Weights).
_BY_KEY = {w.key: w for w in WEIGHTS}
UNET = _BY_KEY["unet"].local_name
POSE_CONTROLNET = _BY_KEY["pose_controlnet"].local_name
FACE_CONTROLNET = _BY_KEY["face_controlnet"].local_name
IP_ADAPTER = _BY_KEY["ip_adapter"].local_name
CLIP_VISION = _BY_KEY["clip_vision"].local_name  # h94/IP-Adapter models/image_encoder, renamed
SD15_CHECKPOINT = _BY_KEY["sd15"].local_name
DWPOSE_FILES = (_BY_KEY["dwpose_detector"].local_name, _BY_KEY["dwpose_estimator"].local_name)
# The official example assets (bytedance/X-Dyna assets/), as the loaders' default inputs.
REFERENCE_IMAGE = "reference_1.png"
DRIVING_VIDEO = "driving_1.mp4"
INPUT_FILES = (REFERENCE_IMAGE, DRIVING_VIDEO)

WIDTH, HEIGHT = 512, 896  # the generation size X-Dyna was trained at
FPS = 15.0  # the released videos are saved at 15 fps
SEED = 42

UI_ONLY_NODES = {"Note", "MarkdownNote"}  # front-end-only nodes: in the UI file, not in the API prompt


@dataclass
class Node:
    """One node: `links` maps an input name to (source node key, source output name)."""

    key: str
    type: str
    group: str
    column: int = 0
    widgets: dict[str, Any] = field(default_factory=dict)
    links: dict[str, tuple[str, str]] = field(default_factory=dict)
    title: str | None = None
    size: tuple[int, int] | None = None


@dataclass
class Group:
    title: str
    row: int
    color: str = "#3f789e"


@dataclass
class Workflow:
    """`caption` and `summary` are drawn on the template card's thumbnail (the front-end shows only the file
    name of a custom node's template, so the picture has to say what the graph does)."""

    name: str
    groups: dict[str, Group]
    nodes: list[Node]
    caption: str = ""
    summary: str = ""

    def ids(self) -> dict[str, int]:
        return {node.key: index + 1 for index, node in enumerate(self.nodes)}


WEIGHTS_NOTE = f"""\
**Weights**: add an *X-Dyna Check Weights* node and queue it to see which are missing (it downloads them
with `download_missing` on); sources and licences are in the pack's README.

- `{UNET}` → `models/xdyna/`
- `{POSE_CONTROLNET}` (pose) and `{FACE_CONTROLNET}` (S-Face) → `models/controlnet/`
- `{IP_ADAPTER}` → `models/ipadapter/`
- CLIP ViT-H/14 image encoder (`h94/IP-Adapter` `models/image_encoder/model.safetensors`, saved as
  `{CLIP_VISION}`) → `models/clip_vision/`
- any SD1.5 checkpoint, e.g. `{SD15_CHECKPOINT}` (only its VAE and text encoder are used) → `models/checkpoints/`
- DWPose's `{DWPOSE_FILES[0]}` and `{DWPOSE_FILES[1]}` download to `models/xdyna/dwpose/` on first use
  (offline: replace both DWPose nodes with *X-Dyna MediaPipe Pose*, same outputs; see its help page)
"""

SETTINGS_NOTE = f"""\
**Settings as released**: {WIDTH}×{HEIGHT} (keep width and height equal on every node that has them),
DDIM on the released timesteps (scheduler `xdyna_ddim`), 25 steps, cfg 7.5, windows of 16 frames overlapping by 4, empty prompts, output at
{FPS:g} fps. The output length is the number of driving frames.
"""


def driving_input_nodes(frames_note: str, long_video: bool) -> list[Node]:
    """Reference image and driving video, and the frames taken from it."""
    nodes = [
        Node("note", "MarkdownNote", "inputs", widgets={"text": frames_note}, title="Read me", size=(440, 560)),
        Node("reference", "LoadImage", "inputs", widgets={"image": REFERENCE_IMAGE}, title="Reference image"),
        Node("driving", "LoadVideo", "inputs", column=1, widgets={"file": DRIVING_VIDEO}, title="Driving video"),
    ]
    if long_video:
        # Exactly every 2nd frame: crop stride*(N-1)+1 frames, then sample N of them evenly.
        nodes += [
            Node(
                "clip",
                "VideoTemporalCrop",
                "inputs",
                column=1,
                widgets={"start_frame": 0, "length": 2 * (192 - 1) + 1},
                links={"video": ("driving", "VIDEO")},
                title="Driving frames (start, 2 × 191 + 1)",
            ),
            Node(
                "stride",
                "VideoFrameSample",
                "inputs",
                column=1,
                widgets={"num_frames": 192, "strategy": "uniform"},
                links={"video": ("clip", "video")},
                title="Every 2nd frame (192 frames)",
            ),
        ]
        video_source = ("stride", "video")
    else:
        nodes.append(
            Node(
                "clip",
                "VideoTemporalCrop",
                "inputs",
                column=1,
                widgets={"start_frame": 0, "length": 32},
                links={"video": ("driving", "VIDEO")},
                title="Driving frames (start, count)",
            )
        )
        video_source = ("clip", "video")
    nodes.append(
        Node("frames", "GetVideoComponents", "inputs", column=1, links={"video": video_source}),
    )
    return nodes


def pose_nodes(with_face: bool) -> list[Node]:
    """Driving and reference poses (DWPose), retargeted to the reference body and drawn; S-Face conditions."""
    size = {"width": WIDTH, "height": HEIGHT}
    nodes = [
        Node(
            "driving_fit",
            "XDyna_CropResize",
            "pose",
            widgets={**size, "crop": "top_biased"},
            links={"image": ("frames", "images")},
            title="Driving frames at 512×896",
        ),
        Node(
            "reference_fit",
            "XDyna_CropResize",
            "pose",
            widgets={**size, "crop": "center"},
            links={"image": ("reference", "IMAGE")},
            title="Reference at 512×896",
        ),
        Node(
            "driving_pose",
            "XDyna_DWPoseExtractor",
            "pose",
            column=1,
            links={"image": ("driving_fit", "image")},
            title="Driving poses (DWPose)",
        ),
        Node(
            "reference_pose",
            "XDyna_DWPoseExtractor",
            "pose",
            column=1,
            links={"image": ("reference_fit", "image")},
            title="Reference pose (DWPose)",
        ),
        Node(
            "retarget",
            "XDyna_PoseRetarget",
            "pose",
            column=2,
            links={
                "driving_pose": ("driving_pose", "pose_keypoint"),
                "reference_pose": ("reference_pose", "pose_keypoint"),
            },
        ),
        Node(
            "render",
            "XDyna_RenderPose",
            "pose",
            column=2,
            widgets={**size, "image_frames": 8},
            links={"pose_keypoint": ("retarget", "pose_keypoint")},
        ),
    ]
    if with_face:
        nodes.append(
            Node(
                "face",
                "XDyna_FaceCropper",
                "pose",
                column=2,
                widgets=size,
                links={
                    "image": ("driving_fit", "image"),
                    "pose_keypoint": ("driving_pose", "pose_keypoint"),
                    "retargeted_pose": ("retarget", "pose_keypoint"),
                },
            )
        )
    nodes.append(
        Node(
            "pose_preview",
            "PreviewImage",
            "pose",
            column=3,
            links={"images": ("render", "pose_image")},
            title="Pose condition",
            size=(300, 300),
        )
    )
    if with_face:
        nodes.append(
            Node(
                "face_preview",
                "PreviewImage",
                "pose",
                column=3,
                links={"images": ("face", "global_preview")},
                title="S-Face condition (global)",
                size=(300, 300),
            )
        )
    return nodes


def model_nodes(with_face: bool) -> list[Node]:
    """The X-Dyna model, the reference, the text conditioning and the ControlNets."""
    nodes = [
        Node("model", "XDyna_LoadModel", "model", widgets={"ckpt_name": UNET}),
        Node(
            "sd15",
            "CheckpointLoaderSimple",
            "model",
            widgets={"ckpt_name": SD15_CHECKPOINT},
            title="SD1.5 (VAE and text encoder)",
        ),
        Node(
            "clip_vision",
            "CLIPVisionLoader",
            "model",
            widgets={"clip_name": CLIP_VISION},
            title="CLIP ViT-H/14 image encoder",
        ),
        Node(
            "positive",
            "CLIPTextEncode",
            "model",
            widgets={"text": ""},
            links={"clip": ("sd15", "CLIP")},
            title="Positive (empty, as trained)",
            size=(320, 120),
        ),
        Node(
            "negative",
            "CLIPTextEncode",
            "model",
            widgets={"text": ""},
            links={"clip": ("sd15", "CLIP")},
            title="Negative (empty, as trained)",
            size=(320, 120),
        ),
        Node(
            "load_reference",
            "XDyna_LoadReference",
            "model",
            column=1,
            widgets={"ip_adapter": IP_ADAPTER, "width": WIDTH, "height": HEIGHT},
            links={
                "image": ("reference", "IMAGE"),
                "vae": ("sd15", "VAE"),
                "clip_vision": ("clip_vision", "CLIP_VISION"),
            },
        ),
        Node(
            "adapter",
            "XDyna_ApplyDynamicsAdapter",
            "model",
            column=1,
            links={
                "model": ("model", "MODEL"),
                "xdyna": ("model", "xdyna"),
                "reference": ("load_reference", "reference"),
            },
        ),
        Node(
            "pose_cn",
            "XDyna_LoadControlNet",
            "control",
            widgets={"control_net_name": POSE_CONTROLNET},
            title="Pose ControlNet",
        ),
    ]
    controls = {
        "positive": ("positive", "CONDITIONING"),
        "negative": ("negative", "CONDITIONING"),
        "pose_controlnet": ("pose_cn", "CONTROL_NET"),
        "pose_images": ("render", "pose_frames"),
    }
    if with_face:
        nodes.append(
            Node(
                "face_cn",
                "XDyna_LoadControlNet",
                "control",
                widgets={"control_net_name": FACE_CONTROLNET},
                title="S-Face ControlNet",
            )
        )
        controls |= {"face_controlnet": ("face_cn", "CONTROL_NET"), "face_condition": ("face", "face_condition")}
    nodes.append(Node("controls", "XDyna_ApplyControlNets", "control", links=controls))
    return nodes


def output_nodes(prefix: str) -> list[Node]:
    return [
        Node(
            "sampler",
            "XDyna_TemporalSampler",
            "sample",
            widgets={
                "seed": SEED,
                "steps": 25,
                "cfg": 7.5,
                "sampler_name": "ddim",
                "scheduler": "xdyna_ddim",
                "window_length": 16,
                "window_overlap": 4,
            },
            links={
                "model": ("adapter", "MODEL"),
                "positive": ("controls", "positive"),
                "negative": ("controls", "negative"),
                "reference": ("load_reference", "reference"),
                "pose_images": ("render", "pose_frames"),
            },
        ),
        Node("decode", "VAEDecode", "sample", links={"samples": ("sampler", "LATENT"), "vae": ("sd15", "VAE")}),
        Node("video", "CreateVideo", "sample", widgets={"fps": FPS}, links={"images": ("decode", "IMAGE")}),
        Node(
            "save",
            "SaveVideo",
            "sample",
            column=1,
            widgets={"filename_prefix": prefix, "format": "mp4", "format.codec": "h264"},
            links={"video": ("video", "VIDEO")},
        ),
    ]


def groups(with_face: bool) -> dict[str, Group]:
    return {
        "inputs": Group("1 · Reference image and driving video", row=0, color="#3f789e"),
        "pose": Group(
            "2 · Poses fitted to the reference" + (" and S-Face conditions" if with_face else ""), row=0, color="#88a"
        ),
        "model": Group("3 · X-Dyna model and reference", row=1, color="#a1309b"),
        "control": Group(
            "4 · ControlNets" + (" (pose and S-Face)" if with_face else " (pose only)"), row=1, color="#b58b2a"
        ),
        "sample": Group("5 · Sample the video and save it", row=1, color="#444"),
    }


def full_graph() -> Workflow:
    note = f"""## X-Dyna: reference image + driving video → animation

The person of the **reference image** moves like the person of the **driving video**: body pose through the
pose ControlNet, facial expression through the S-Face ControlNet, appearance held by the Dynamics-Adapter.

**Driving frames**: *Crop Video (Temporal)* keeps `length` frames from `start_frame` (32 frames for a
short first run). Raise `length` for more of the clip; the
sampler works through long videos in overlapping windows (see the long-video example).

{SETTINGS_NOTE}
{WEIGHTS_NOTE}"""
    nodes = (
        driving_input_nodes(note, long_video=False)
        + pose_nodes(True)
        + model_nodes(True)
        + output_nodes("xdyna/X-Dyna")
    )
    return Workflow(
        "xdyna_full",
        groups(True),
        nodes,
        caption="Pose + face",
        summary="reference image + driving video: body pose and facial expression",
    )


def pose_only_graph() -> Workflow:
    note = f"""## X-Dyna, pose only (no S-Face)

The same graph without the S-Face ControlNet: the body follows the driving poses, the face keeps the
reference's expression (the model animates it freely). Use it when the driving face is hidden, tiny or should
not be copied; it needs one ControlNet less (faster, less memory).

To add the face back, load the full example (or add *X-Dyna Face Cropper* on the driving frames and driving
poses, and *X-Dyna Load ControlNet* with `{FACE_CONTROLNET}`, into *X-Dyna Apply ControlNets*).

{SETTINGS_NOTE}
{WEIGHTS_NOTE}"""
    nodes = (
        driving_input_nodes(note, long_video=False)
        + pose_nodes(False)
        + model_nodes(False)
        + output_nodes("xdyna/X-Dyna_pose_only")
    )
    return Workflow(
        "xdyna_pose_only",
        groups(False),
        nodes,
        caption="Pose only",
        summary="body pose from the driving video; the face animates freely",
    )


def long_video_graph() -> Workflow:
    note = f"""## X-Dyna, long video: 192 frames, every 2nd driving frame (as released)

**Picking the frames**: *Crop Video (Temporal)* keeps `length` frames from `start_frame`, then *Sample Video
Frame* (`uniform`) takes `num_frames` of them evenly spaced. For a stride *s* and *N* frames set
`length = s × (N − 1) + 1` and `num_frames = N`: here 2 × 191 + 1 = 383 and 192, exactly every 2nd frame.
A clip shorter than `length` gives *N* frames spread over the whole clip.

**Windows**: the sampler denoises 16 frames at a time, overlapping by 4, and averages the overlaps (192
frames: 16 windows per step). GPU memory stays that of one window; the frames themselves are held in RAM
(about 1 GB per 192-frame image stream at 512×896).

**VideoHelperSuite instead of the core video nodes**: replace *Load Video*, *Crop Video (Temporal)*, *Sample
Video Frame* and *Get Video Components* with VHS *Load Video (Upload)* (`select_every_nth` 2,
`frame_load_cap` 192, `skip_first_frames` = start) and connect its IMAGE output to *Driving frames at
512×896*; replace *Create Video* and *Save Video* with VHS *Video Combine* (`frame_rate` {FPS:g},
`format` video/h264-mp4) fed by *VAE Decode*.

{SETTINGS_NOTE}
{WEIGHTS_NOTE}"""
    nodes = (
        driving_input_nodes(note, long_video=True)
        + pose_nodes(True)
        + model_nodes(True)
        + output_nodes("xdyna/X-Dyna_long")
    )
    return Workflow(
        "xdyna_long_video",
        groups(True),
        nodes,
        caption="Long video",
        summary="192 frames, every 2nd driving frame, windows of 16",
    )


WORKFLOWS = (full_graph, pose_only_graph, long_video_graph)


def workflows() -> list[Workflow]:
    return [make() for make in WORKFLOWS]


# --- where each model file comes from, for the front-end's missing-models panel --------------------------------


def model_metadata() -> dict[str, dict[str, str]]:
    """`properties.models` entries by file name: name, download address and ComfyUI folder of every file of the
    weights table. The build gives each node those its widgets name; the front-end matches them by name to the
    node's missing files and shows the folder and the link."""
    return {w.local_name: {"name": w.local_name, "url": w.remote.url, "directory": w.folder} for w in WEIGHTS}
