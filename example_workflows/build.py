"""The example workflows, described once and written in both of ComfyUI's formats, with their thumbnails.

    python example_workflows/build.py        (from the pack's folder; needs the host-test ComfyUI and Chromium)

Each workflow below is a list of nodes (type, widget values that differ from the defaults, links by input
and output name) and the groups that frame them. From that one description:

- `api/<name>.json` (API format) is computed here, in Python, from the node schemas of `/object_info`: every
  widget input gets the description's value or the schema's default, as the front-end would fill it in;
- `<name>.json` (UI format) is made by the real front-end: a headless Chromium creates each node with
  `LiteGraph.createNode`, sets its widgets, links it, lays the groups out and serialises the graph, so slot
  types, widget order, dynamic widgets (Save Video's format/codec) and ids are the front-end's own;
- `<name>.jpg` is a screenshot of that graph as the front-end draws it, downscaled.

The build checks that the front-end's own API conversion of the UI graph (`app.graphToPrompt`) equals the
Python one, and `tests/host/test_workflows.py` checks the committed files the same way, so the two formats
cannot drift apart. The model file names are the official ones (README, weights table).
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PACK_ROOT = HERE.parent
API_DIR = HERE / "api"
logger = logging.getLogger("xdyna.workflows")

# Official file names (README, weights table) and the folders they go in.
UNET = "unet-checkpoint-epoch-5.ckpt"
POSE_CONTROLNET = "controlnet-checkpoint-epoch-5.ckpt"
FACE_CONTROLNET = "controlnet-face-checkpoint-epoch-2.ckpt"
IP_ADAPTER = "ip-adapter-plus_sd15.bin"
CLIP_VISION = "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors"  # h94/IP-Adapter models/image_encoder, renamed
SD15_CHECKPOINT = "v1-5-pruned-emaonly.safetensors"
DWPOSE_FILES = ("yolox_l.onnx", "dw-ll_ucoco_384.onnx")
MODEL_FILES = {
    "xdyna": (UNET,),
    "controlnet": (POSE_CONTROLNET, FACE_CONTROLNET),
    "ipadapter": (IP_ADAPTER,),
    "clip_vision": (CLIP_VISION,),
    "checkpoints": (SD15_CHECKPOINT,),
    "xdyna/dwpose": DWPOSE_FILES,
}
# The official example assets (bytedance/X-Dyna assets/), as the loaders' default inputs.
REFERENCE_IMAGE = "reference_1.png"
DRIVING_VIDEO = "driving_1.mp4"
INPUT_FILES = (REFERENCE_IMAGE, DRIVING_VIDEO)

WIDTH, HEIGHT = 512, 896  # the generation size X-Dyna was trained at
FPS = 15.0  # the released videos are saved at 15 fps
SEED = 42

# Widget input types: everything else is a socket. Dynamic combos carry nested widget inputs per option.
DYNAMIC_COMBO = "COMFY_DYNAMICCOMBO_V3"
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO", DYNAMIC_COMBO}
SCALAR_DEFAULTS = {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}
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
    name: str
    groups: dict[str, Group]
    nodes: list[Node]

    def ids(self) -> dict[str, int]:
        return {node.key: index + 1 for index, node in enumerate(self.nodes)}


# --- the graphs ----------------------------------------------------------------------------------------------

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
DDIM with `ddim_uniform`, 25 steps, cfg 7.5, windows of 16 frames overlapping by 4, empty prompts, output at
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
            widgets=size,
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
                links={"image": ("driving_fit", "image"), "pose_keypoint": ("driving_pose", "pose_keypoint")},
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
        "pose_images": ("render", "pose_image"),
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
                "scheduler": "ddim_uniform",
                "window_length": 16,
                "window_overlap": 4,
            },
            links={
                "model": ("adapter", "MODEL"),
                "positive": ("controls", "positive"),
                "negative": ("controls", "negative"),
                "reference": ("load_reference", "reference"),
                "pose_images": ("render", "pose_image"),
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
    return Workflow("xdyna_full", groups(True), nodes)


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
    return Workflow("xdyna_pose_only", groups(False), nodes)


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
    return Workflow("xdyna_long_video", groups(True), nodes)


WORKFLOWS = (full_graph, pose_only_graph, long_video_graph)


def workflows() -> list[Workflow]:
    return [make() for make in WORKFLOWS]


# --- API format, from the node schemas -------------------------------------------------------------------------


def _default(kind: Any, options: dict) -> Any:
    if "default" in options:
        return options["default"]
    if isinstance(kind, list):
        return kind[0] if kind else None
    if kind == "COMBO":
        return options.get("options", [None])[0] if options.get("options") else None
    if kind == DYNAMIC_COMBO:
        return options["options"][0]["key"]
    return SCALAR_DEFAULTS.get(kind)


def widget_values(node_info: dict, given: dict[str, Any]) -> dict[str, Any]:
    """Every widget input of a node with its value: `given`, else the schema default. Dynamic combos add the
    inputs of the chosen option as `<combo>.<input>` (the names the front-end sends)."""
    values: dict[str, Any] = {}

    def visit(inputs: dict, prefix: str) -> None:
        for section in ("required", "optional"):
            for name, spec in inputs.get(section, {}).items():
                kind, options = spec[0], (spec[1] if len(spec) > 1 else {})
                if not (isinstance(kind, list) or kind in WIDGET_TYPES):
                    continue
                full = prefix + name
                values[full] = given.get(full, _default(kind, options))
                if kind == DYNAMIC_COMBO:
                    chosen = [o for o in options["options"] if o["key"] == values[full]]
                    if not chosen:
                        raise ValueError(f"{full}={values[full]!r} is not one of its options")
                    visit(chosen[0]["inputs"], full + ".")

    visit(node_info["input"], "")
    unknown = set(given) - set(values)
    if unknown:
        raise ValueError(f"{node_info['name']} has no widget input(s) {sorted(unknown)}; it has {sorted(values)}")
    return values


def api_prompt(workflow: Workflow, object_info: dict) -> dict[str, dict]:
    """The API-format prompt of a workflow: what `app.graphToPrompt` sends for its UI graph."""
    ids = workflow.ids()
    by_key = {node.key: node for node in workflow.nodes}
    prompt: dict[str, dict] = {}
    for node in workflow.nodes:
        if node.type in UI_ONLY_NODES:
            continue
        info = object_info[node.type]
        inputs: dict[str, Any] = widget_values(info, node.widgets)
        for name, (source, output) in node.links.items():
            source_info = object_info[by_key[source].type]
            if output not in source_info["output_name"]:
                raise ValueError(f"{source} ({source_info['name']}) has no output {output!r}")
            inputs[name] = [str(ids[source]), source_info["output_name"].index(output)]
        title = node.title or info["display_name"]
        prompt[str(ids[node.key])] = {"inputs": inputs, "class_type": node.type, "_meta": {"title": title}}
    return prompt


# --- UI format, made by the front-end ------------------------------------------------------------------------

CREATE_JS = """async ({nodes}) => {
    app.graph.clear();
    window.__xdynaBuild = {};
    const made = window.__xdynaBuild;
    for (const d of nodes) {
        const node = LiteGraph.createNode(d.type);
        if (!node) throw new Error(`the front-end does not know the node type ${d.type}`);
        if (d.title) node.title = d.title;
        app.graph.add(node);
        for (const [name, value] of Object.entries(d.widgets)) {
            const widget = node.widgets?.find((w) => w.name === name);
            if (!widget) throw new Error(`${d.type} has no widget ${name}: ${node.widgets?.map((w) => w.name)}`);
            widget.value = value;
            widget.callback?.(widget.value, app.canvas, node);  // dynamic combos add their option's widgets here
        }
        for (const widget of node.widgets ?? []) if (widget.name === 'control_after_generate') widget.value = 'fixed';
        made[d.key] = node;
    }
    for (const d of nodes) {
        for (const [input, [source, output]] of Object.entries(d.links)) {
            const from = made[source], to = made[d.key];
            const o = from.outputs.findIndex((s) => s.name === output);
            const i = to.inputs.findIndex((s) => s.name === input);
            if (o < 0 || i < 0) throw new Error(`no slot for ${source}.${output} -> ${d.key}.${input}`);
            if (!from.connect(o, to, i)) throw new Error(`the front-end refused ${source}.${output} -> ${d.key}.${input}`);
        }
    }
}"""

# Run once the previews of the loaders have loaded (they grow their nodes): groups in rows, each group's nodes
# in columns, stacked by their drawn size.
LAYOUT_JS = """async ({nodes, groups}) => {
    const GAP = 40, PAD = 30, TITLE = LiteGraph.NODE_TITLE_HEIGHT, GROUP_TITLE = 60, MIN_WIDTH = 300;
    const made = window.__xdynaBuild;
    for (const d of nodes) {
        const node = made[d.key], [width, height] = d.size ?? [MIN_WIDTH, 0];
        node.setSize([Math.max(width, node.size[0]), Math.max(height, node.size[1])]);
    }
    let y = 0;
    for (const row of [...new Set(groups.map((g) => g.row))].sort()) {
        let x = 0, rowHeight = 0;
        for (const g of groups.filter((g) => g.row === row)) {
            const members = nodes.filter((d) => d.group === g.key);
            if (!members.length) continue;
            let cx = x + PAD, bottom = 0;
            for (const column of [...new Set(members.map((d) => d.column))].sort((a, b) => a - b)) {
                let cy = y + GROUP_TITLE + TITLE, width = 0;
                for (const d of members.filter((d) => d.column === column)) {
                    const node = made[d.key];
                    node.pos = [cx, cy];
                    cy += node.size[1] + TITLE + GAP;
                    width = Math.max(width, node.size[0]);
                }
                bottom = Math.max(bottom, cy);
                cx += width + GAP;
            }
            const group = new LiteGraph.LGraphGroup(g.title, undefined);
            group.color = g.color;
            group.font_size = 24;
            app.graph.add(group);
            group.pos = [x, y];
            group.size = [cx - GAP + PAD - x, bottom - GAP + PAD - y];
            x = cx - GAP + PAD + 2 * GAP;
            rowHeight = Math.max(rowHeight, bottom - y);
        }
        y += rowHeight + 2 * GAP;
    }
    app.canvas.setDirty(true, true);
    delete window.__xdynaBuild;
    return app.graph.serialize();
}"""


def _strip_nulls(value: Any) -> Any:
    """The front-end writes every optional slot field as null; drop those (it reads them back as absent)."""
    if isinstance(value, dict):
        return {k: _strip_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_strip_nulls(v) for v in value]
    return value


def ui_description(workflow: Workflow) -> dict:
    return {
        "nodes": [
            {
                "key": n.key,
                "type": n.type,
                "group": n.group,
                "column": n.column,
                "widgets": n.widgets,
                "links": n.links,
                "title": n.title,
                "size": n.size,
            }
            for n in workflow.nodes
        ],
        "groups": [
            {"key": key, "title": g.title, "row": g.row, "color": g.color} for key, g in workflow.groups.items()
        ],
    }


def ui_workflow(frontend, workflow: Workflow) -> dict:
    description = ui_description(workflow)
    frontend.evaluate(CREATE_JS, description)
    frontend.page.wait_for_timeout(1500)
    graph = frontend.evaluate(LAYOUT_JS, description)
    graph = _strip_nulls(graph)
    # Open on the first group (the read-me and the inputs) at a zoom where the text is legible.
    graph.setdefault("extra", {})["ds"] = {"scale": 0.75, "offset": [40, 40]}
    return graph


# --- placeholders for the files the widgets name -----------------------------------------------------------


def stage_files(models_dir: Path, input_dir: Path, media_source: Path | None = None) -> None:
    """Put every file the example workflows name where a ComfyUI server looks for it, so that its validation
    and the front-end's missing-model and missing-media checks pass: the X-Dyna files as tiny official-layout
    weights (the pack's loaders read them), the others as empty placeholders (validation checks names only).
    Inputs are copied from `media_source` when it holds them, else made tiny (a grey image, a short clip).
    """
    sys.path.insert(0, str(PACK_ROOT))
    from tests.fixtures.weights import OFFICIAL_FILE_NAMES, write_official_files

    with tempfile.TemporaryDirectory() as tmp:
        written = write_official_files(tmp)
        tiny = {OFFICIAL_FILE_NAMES[role]: path for role, path in written.items() if role in OFFICIAL_FILE_NAMES}
        for folder, names in MODEL_FILES.items():
            (models_dir / folder).mkdir(parents=True, exist_ok=True)
            for name in names:
                target = models_dir / folder / name
                if name in tiny:
                    shutil.copyfile(tiny[name], target)
                elif not target.exists():
                    target.write_bytes(b"")
    input_dir.mkdir(parents=True, exist_ok=True)
    for name in INPUT_FILES:
        source = media_source / name if media_source else None
        if source is not None and source.is_file():
            shutil.copyfile(source, input_dir / name)
        elif name.endswith(".png"):
            _tiny_image(input_dir / name)
        else:
            _tiny_video(input_dir / name)


def _tiny_image(path: Path) -> None:
    from PIL import Image

    Image.new("RGB", (64, 112), (128, 128, 128)).save(path)


def _tiny_video(path: Path, frames: int = 4) -> None:
    import av
    import numpy as np

    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width, stream.height, stream.pix_fmt = 64, 112, "yuv420p"
        for index in range(frames):
            image = np.full((112, 64, 3), 40 * index, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


# --- thumbnails ----------------------------------------------------------------------------------------------

THUMBNAIL_WIDTH = 640


def thumbnail(frontend, graph: dict, path: Path, screenshot: Path) -> None:
    """Load the UI graph as a user would, picture it whole with the menus hidden, and save a small jpg."""
    from PIL import Image

    frontend.load_workflow(graph, settle_s=2.0)
    frontend.screenshot_graph(screenshot)
    with Image.open(screenshot) as image:
        image = image.convert("RGB")
        height = round(image.height * THUMBNAIL_WIDTH / image.width)
        image.resize((THUMBNAIL_WIDTH, height), Image.LANCZOS).save(path, quality=85, optimize=True)


# --- the build -------------------------------------------------------------------------------------------------


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def comparable(prompt: dict, object_info: dict) -> dict:
    """Node ids, class types and the inputs the node schemas declare (titles are cosmetic).

    The front-end also sends the values of its own display widgets (Load Video's `video-preview`); the
    server ignores inputs that a node does not declare, and so does this comparison.
    """
    out = {}
    for nid, node in prompt.items():
        info = object_info.get(node["class_type"], {}).get("input", {})
        declared = {name for section in ("required", "optional") for name in info.get(section, {})}
        inputs = {k: v for k, v in node["inputs"].items() if k.split(".")[0] in declared}
        out[nid] = {"class_type": node["class_type"], "inputs": inputs}
    return out


def prompt_differences(frontend: dict, python: dict) -> list[str]:
    """Where two API prompts disagree, node by node and input by input (empty when they agree)."""
    out = [f"node {nid} only in the front-end's" for nid in frontend.keys() - python.keys()]
    out += [f"node {nid} only in the Python one" for nid in python.keys() - frontend.keys()]
    for nid in sorted(frontend.keys() & python.keys(), key=int):
        a, b = frontend[nid], python[nid]
        if a["class_type"] != b["class_type"]:
            out.append(f"node {nid}: {a['class_type']} against {b['class_type']}")
            continue
        for name in sorted(a["inputs"].keys() | b["inputs"].keys()):
            if a["inputs"].get(name, "<absent>") != b["inputs"].get(name, "<absent>"):
                out.append(
                    f"{nid} {a['class_type']}.{name}: front-end {a['inputs'].get(name, '<absent>')!r}, "
                    f"python {b['inputs'].get(name, '<absent>')!r}"
                )
    return out


def build(out_dir: Path = HERE) -> None:
    from tests.conftest import shared_data_dir
    from tests.host.comfy_host import find_comfyui
    from tests.host.comfy_server import ComfyServer
    from tests.host.frontend import FrontEnd, chromium_unavailable, post_settings

    comfy, where = find_comfyui()
    if comfy is None or chromium_unavailable():
        raise SystemExit(f"cannot build: {where if comfy is None else chromium_unavailable()}")
    with tempfile.TemporaryDirectory() as tmp:
        server = ComfyServer(comfy, Path(tmp) / "server")
        server._prepare()
        stage_files(server.models, server.input_dir, shared_data_dir())
        server.start()
        try:
            post_settings(server.url)
            object_info = server.get_json("/object_info")
            with FrontEnd(server.url, Path(tmp) / "profile") as frontend:
                frontend.open()
                for workflow in workflows():
                    api = api_prompt(workflow, object_info)
                    graph = ui_workflow(frontend, workflow)
                    state = frontend.load_workflow(graph)
                    converted = frontend.graph_to_prompt()
                    if comparable(converted, object_info) != comparable(api, object_info):
                        differences = prompt_differences(comparable(converted, object_info), api)
                        raise SystemExit(f"{workflow.name}: the front-end's API prompt differs: {differences}")
                    problems = {k: v for k, v in state.items() if k.startswith(("missing", "unregistered")) and v}
                    if problems:
                        raise SystemExit(f"{workflow.name}: the front-end reports {problems}")
                    write_json(out_dir / f"{workflow.name}.json", graph)
                    write_json(out_dir / "api" / f"{workflow.name}.json", api)
                    thumbnail(frontend, graph, out_dir / f"{workflow.name}.jpg", Path(tmp) / f"{workflow.name}.png")
                    logger.info("wrote %s (.json, .jpg, api/)", workflow.name)
        finally:
            server.stop()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sys.path.insert(0, str(PACK_ROOT))
    build()
