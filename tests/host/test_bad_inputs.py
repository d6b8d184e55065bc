"""Every class of bad input, in real graphs, stops with a message naming the node, the input and the fix.

Graphs run in the booted ComfyUI through its own validator and executor (`comfy_host.run`), on tiny weights in
the official layouts. Bad tensors come from a test node that spoils a clip the way other packs or broken models
hand them over (NaN in one frame of 100, uint8, half precision, other channel counts, no batch dimension, ...);
bad literals are put where API prompts put them. What is unambiguous must be converted instead: those cases
compare the result with the one for the equivalent well-formed input.
"""

from __future__ import annotations

import struct
from dataclasses import replace

import pytest
import torch

from tests.fixtures.official_layout import TINY_UNET, TINY_UNET_ALL_KEYS
from tests.fixtures.tiny_onnx import dwpose_folder
from tests.fixtures.weights import (
    controlnet_state_dict,
    ip_adapter_plus_state_dict,
    save_bin,
    save_safetensors,
    xdyna_unet_state_dict,
)
from tests.host.comfy_host import PromptError
from tests.host.prompts import tiny_xdyna_prompt
from tests.host.support_nodes import IMAGE_DEFECTS, SUPPORT_NODES
from tests.host.test_model_graph import TINY_IP_RESAMPLER
from tests.host.xdyna_setup import pack

WIDTH, HEIGHT, FRAMES = 48, 64, 5
LFS_POINTER = "version https://git-lfs.github.com/spec/v1\noid sha256:{}\nsize 5288933977\n".format("ab" * 32)
LINK = "[node_id, output_index]"
POSE_JSON = '[{"people": [], "canvas_width": 48, "canvas_height": 64}]'


@pytest.fixture(scope="module")
def files(comfy_host):
    """Good and bad weight files in the host's model folders (names prefixed `bad-` to stay apart)."""
    models = comfy_host.workdir / "models"
    for folder in ("xdyna", "ipadapter", "controlnet"):
        (models / folder).mkdir(parents=True, exist_ok=True)
        comfy_host.folder_paths.add_model_folder_path(folder, str(models / folder), is_default=True)
    good = xdyna_unet_state_dict(TINY_UNET, seed=5)
    save_safetensors(good, models / "xdyna" / "bad-good.safetensors")
    save_safetensors(
        xdyna_unet_state_dict(replace(TINY_UNET, in_channels=9)), models / "xdyna" / "bad-inpaint.safetensors"
    )
    save_safetensors(
        {k: v for k, v in good.items() if k != "up_blocks.1.resnets.0.conv1.weight"},
        models / "xdyna" / "bad-missing-one.safetensors",
    )
    # pickle opcodes with absurd lengths, as random bytes give: a plain unpickler runs out of memory on them
    noise = b"\x80\x04\x8e" + struct.pack("<Q", 2**62) + bytes(range(256)) * 64
    (models / "xdyna" / "bad-random.ckpt").write_bytes(noise)
    (models / "xdyna" / "bad-pointer.safetensors").write_text(LFS_POINTER)
    save_bin(ip_adapter_plus_state_dict(TINY_UNET, TINY_IP_RESAMPLER, seed=6), models / "ipadapter" / "bad-ip-plus.bin")
    wide = replace(TINY_IP_RESAMPLER, embedding_dim=64)  # made for another image encoder than the tiny CLIP's 32
    save_bin(ip_adapter_plus_state_dict(TINY_UNET, wide, seed=6), models / "ipadapter" / "bad-ip-other-encoder.bin")
    (models / "ipadapter" / "bad-random.bin").write_bytes(noise)
    pose = controlnet_state_dict(TINY_UNET, 3, seed=8)
    save_safetensors(pose, models / "controlnet" / "bad-pose.safetensors")
    save_safetensors(
        controlnet_state_dict(TINY_UNET_ALL_KEYS, 3, seed=9), models / "controlnet" / "bad-wide-pose.safetensors"
    )
    save_safetensors(
        {k: v for k, v in pose.items() if k != "controlnet_down_blocks.4.weight"},
        models / "controlnet" / "bad-pose-missing-one.safetensors",
    )
    comfy_host.nodes.NODE_CLASS_MAPPINGS.update(SUPPORT_NODES)
    return models


def video_graph(**changes) -> dict:
    """X-Dyna on tiny weights, reference and pose frames from random clips; `changes` maps "node.input" to values."""
    prompt = tiny_xdyna_prompt(
        ckpt="bad-good.safetensors",
        ip_adapter="bad-ip-plus.bin",
        pose_controlnet="bad-pose.safetensors",
        reference_image=("picture", 0),
        pose_images=("poses", 0),
        size=(WIDTH, HEIGHT),
        frames=FRAMES,
    )
    prompt["picture"] = {
        "class_type": "XDynaTest_RandomClip",
        "inputs": {"frames": 1, "width": 96, "height": 128, "seed": 1},
    }
    prompt["poses"] = {
        "class_type": "XDynaTest_RandomClip",
        "inputs": {"frames": FRAMES, "width": WIDTH, "height": HEIGHT, "seed": 4},
    }
    for where, value in changes.items():
        node, name = where.split(".")
        prompt[node]["inputs"][name] = value
    return prompt


def failure(comfy_host, prompt: dict, target: str = "sampler") -> str:
    """The message of the error the prompt stops with (it must stop at run time, not in ComfyUI's validation)."""
    with pytest.raises(PromptError) as err:
        comfy_host.run(prompt, targets=[target])
    details = err.value.details
    assert isinstance(details, dict) and "exception_message" in details, f"not a run-time error: {details}"
    return details["exception_message"]


def assert_names(message: str, *parts: str) -> None:
    for part in parts:
        assert part in message, f"{part!r} missing from: {message}"


# --- image tensors ---------------------------------------------------------------------------------------------

# node id → (class, display name, the IMAGE input, the other inputs it needs)
IMAGE_TARGETS = {
    "crop": ("XDyna_CropResize", "X-Dyna Crop & Resize", "image", {"crop": "center", "resize": "bilinear"}),
    "ref": (
        "XDyna_LoadReference",
        "X-Dyna Load Reference",
        "image",
        {"vae": ["vae", 0], "clip_vision": ["clip_vision", 0], "ip_adapter": "bad-ip-plus.bin", "crop": "center"},
    ),
    "dwpose": (
        "XDyna_DWPoseExtractor",
        "X-Dyna DWPose Extractor",
        "image",
        {
            "detector": "yolox_l.onnx",
            "pose_model": "dw-ll_ucoco_384.onnx",
            "person": "largest",
            "person_index": 0,
            "missing_person": "repeat_previous",
            "detection_threshold": 0.3,
            "keypoint_threshold": 0.3,
            "provider": "cpu",
            "batch_size": 4,
        },
    ),
    "mediapipe": (
        "XDyna_MediaPipePose",
        "X-Dyna MediaPipe Pose",
        "image",
        {"mode": "video", "min_visibility": 0.3, "face": True},
    ),
    "face": (
        "XDyna_FaceCropper",
        "X-Dyna Face Cropper (S-Face)",
        "image",
        {
            "pose_keypoint": POSE_JSON,
            "crop": "top_biased",
            "stabilize": True,
            "smoothing": 1.0,
            "max_gap": 8,
            "person_index": 0,
            "on_no_face": "black",
        },
    ),
    "hints": ("XDyna_ApplyControlNets", "X-Dyna Apply ControlNets", "pose_images", {}),
}
SIZED = {"crop", "ref", "face"}  # nodes with width/height widgets

# defect → (what the message says was found, what it says to do); every image input refuses these
REFUSED = {
    "nan_in_one_frame": ("holds NaN in frame 57 of 100", "check it"),
    "inf_in_one_frame": ("holds infinite values in frame 57 of 100", "check it"),
    "two_channels": ("has 2 channels per pixel", "give an RGB IMAGE"),
    "rgba_transparent": ("RGBA image with transparent pixels", "put it on a background"),
    "empty_batch": ("is an empty batch (0 frames)", "check the node before it"),
    "channels_first": ("looks channels-first", "move the channels last"),
    "mask_like": ("is a 3-D tensor", "Convert Mask to Image"),
    "scaled_0_255": ("but an IMAGE holds 0 to 1", "divide them by 255"),
    "int32": ("holds torch.int32 values", "convert it"),
}


def image_graph(target: str, defect: str, frames: int) -> dict:
    node_class, _, name, inputs = IMAGE_TARGETS[target]
    prompt = video_graph()
    prompt["clip"] = {
        "class_type": "XDynaTest_RandomClip",
        "inputs": {"frames": frames, "width": WIDTH, "height": HEIGHT, "seed": 9},
    }
    prompt["spoiled"] = {"class_type": "XDynaTest_BadImage", "inputs": {"image": ["clip", 0], "defect": defect}}
    if target == "hints":
        prompt["controls"]["inputs"]["pose_images"] = ["spoiled", 0]
        return prompt
    sized = {"width": WIDTH, "height": HEIGHT} if target in SIZED else {}
    prompt[target] = {"class_type": node_class, "inputs": {name: ["spoiled", 0], **inputs, **sized}}
    return prompt


# ControlNet hints are min-max normalised over the clip: any finite range is a hint
IMAGE_CASES = [(t, d) for t in IMAGE_TARGETS for d in REFUSED if not (t == "hints" and d == "scaled_0_255")]


@pytest.mark.parametrize(("target", "defect"), IMAGE_CASES)
def test_bad_images_are_refused_by_every_image_input(comfy_host, files, target, defect):
    frames = 100 if "one_frame" in defect else 4
    _, display, name, _ = IMAGE_TARGETS[target]
    message = failure(comfy_host, image_graph(target, defect, frames), "controls" if target == "hints" else target)
    found, fix = REFUSED[defect]
    assert_names(message, f"{display}: the {name} input ", found, fix)


def crop_of(comfy_host, image: torch.Tensor, width: int, height: int) -> torch.Tensor:
    fit = pack(comfy_host, "xdyna_core.image_prep").fit_to_size
    return fit(image, width, height, anchor="center", method="bilinear")[0]


# defect → the well-formed IMAGE the spoiled one stands for (from the clean clip x)
CONVERTED = {
    "uint8": lambda x: (x * 255).round() / 255,
    "fp16": lambda x: x.half().float(),
    "bf16": lambda x: x.bfloat16().float(),
    "one_channel": lambda x: x[..., :1].expand(-1, -1, -1, 3),
    "rgba_opaque": lambda x: x,
    "no_batch_dimension": lambda x: x[:1],
}


@pytest.mark.parametrize("defect", list(CONVERTED))
def test_unambiguous_images_are_converted(comfy_host, files, defect):
    prompt = image_graph("crop", defect, 3)
    prompt["crop"]["inputs"].update(width=32, height=32)  # a real crop and resize
    run = comfy_host.run(prompt, targets=["crop"])
    clean = run.outputs("clip")[0]
    expected = crop_of(comfy_host, CONVERTED[defect](clean), 32, 32)
    out = run.outputs("crop")[0]
    assert out.dtype == torch.float32 and out.shape == expected.shape
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)


def test_a_uint8_reference_gives_the_video_of_its_float_twin(comfy_host, files):
    """Once the whole video was NaN; now uint8 pixels are read as 0-255 values, as the float twin holds them."""
    videos = []
    for defect in ("uint8", "uint8_as_float"):
        prompt = video_graph(**{"reference.image": ["spoiled", 0]})
        prompt["spoiled"] = {"class_type": "XDynaTest_BadImage", "inputs": {"image": ["picture", 0], "defect": defect}}
        videos.append(comfy_host.run(prompt, targets=["sampler"]).outputs("sampler")[0]["samples"])
    assert torch.isfinite(videos[0]).all()
    torch.testing.assert_close(videos[0], videos[1], rtol=0, atol=1e-5)


def test_uint8_pose_images_stay_uint8_and_steer_as_their_float_twin(comfy_host, files):
    videos = []
    for defect in ("uint8", "uint8_as_float"):
        prompt = image_graph("hints", defect, FRAMES)
        run = comfy_host.run(prompt, targets=["sampler"])
        control = run.outputs("controls")[0][0][1]["control"]
        assert control.hint_frames.images.dtype == (torch.uint8 if defect == "uint8" else torch.float32)
        videos.append(run.outputs("sampler")[0]["samples"])
    torch.testing.assert_close(videos[0], videos[1], rtol=0, atol=1e-5)


def test_nan_from_the_model_is_not_a_silent_video(comfy_host, files):
    prompt = video_graph(**{"sampler.model": ["nan", 0]})
    prompt["nan"] = {"class_type": "XDynaTest_NaNDuringSampling", "inputs": {"model": ["patched", 0], "call": 2}}
    message = failure(comfy_host, prompt)
    assert_names(message, "X-Dyna Temporal Sampler: the sampled video holds NaN in frame", "precision bf16 or fp32")


# --- settings --------------------------------------------------------------------------------------------------

NAN = float("nan")
SETTINGS = {
    "patched.strength": ("X-Dyna Apply Dynamics-Adapter", "strength", "from 0 to 2"),
    "sampler.cfg": ("X-Dyna Temporal Sampler", "cfg", "from 0 to 100"),
    "sampler.denoise": ("X-Dyna Temporal Sampler", "denoise", "from 0 to 1"),
    "controls.pose_strength": ("X-Dyna Apply ControlNets", "pose_strength", "from 0 to 3"),
    "controls.pose_start": ("X-Dyna Apply ControlNets", "pose_start", "from 0 to 1"),
    "controls.pose_end": ("X-Dyna Apply ControlNets", "pose_end", "from 0 to 1"),
    "controls.face_end": ("X-Dyna Apply ControlNets", "face_end", "from 0 to 1"),
}


@pytest.mark.parametrize("where", list(SETTINGS))
def test_nan_settings_are_refused(comfy_host, files, where):
    """NaN passes ComfyUI's min/max validation (every comparison with NaN is false); ±inf does not."""
    display, name, span = SETTINGS[where]
    message = failure(comfy_host, video_graph(**{where: NAN}))
    assert_names(message, f"{display}: the {name} input is nan", f"give a number {span}")


def test_settings_of_the_other_nodes_are_checked_too(comfy_host, files):
    prompt = video_graph()
    prompt["sched"] = {"class_type": "XDyna_Scheduler", "inputs": {"model": ["patched", 0], "steps": 5, "denoise": NAN}}
    assert_names(failure(comfy_host, prompt, "sched"), "X-Dyna Scheduler: the denoise input is nan", "from 0 to 1")
    face = image_graph("face", "none", 2)
    face["face"]["inputs"]["smoothing"] = NAN
    assert_names(failure(comfy_host, face, "face"), "the smoothing input is nan", "from 0 to 10")
    dwpose = image_graph("dwpose", "none", 2)
    dwpose["dwpose"]["inputs"]["detection_threshold"] = NAN
    assert_names(failure(comfy_host, dwpose, "dwpose"), "the detection_threshold input is nan", "from 0 to 1")


def test_a_controlnet_range_that_never_acts_is_refused(comfy_host, files):
    message = failure(comfy_host, video_graph(**{"controls.pose_start": 0.8, "controls.pose_end": 0.2}))
    assert_names(message, "the pose_start input is 0.8, after pose_end", "set pose_start below pose_end")


# --- seeds -----------------------------------------------------------------------------------------------------


def test_the_largest_seed_of_the_widget_works_and_is_read_modulo_2_63(comfy_host, files):
    top = comfy_host.run(video_graph(**{"sampler.seed": 2**64 - 1}), targets=["sampler"]).outputs("sampler")[0]
    same = comfy_host.run(video_graph(**{"sampler.seed": 2**63 - 1}), targets=["sampler"]).outputs("sampler")[0]
    assert torch.isfinite(top["samples"]).all()
    assert torch.equal(top["samples"], same["samples"])


def test_core_ksampler_takes_the_largest_seed_on_an_x_dyna_model(comfy_host, files):
    """Core's ddim sampler seeds a generator with seed + 1; the X-Dyna patch hands it the seed modulo 2**63."""

    def run(seed):
        prompt = video_graph()
        del prompt["sampler"]
        prompt["latent"] = {
            "class_type": "XDyna_InitLatent",
            "inputs": {"reference": ["reference", 0], "frames": 3, "seed": seed},
        }
        prompt["ksampler"] = {
            "class_type": "KSampler",
            "inputs": {
                "model": ["patched", 0],
                "seed": seed,
                "steps": 2,
                "cfg": 7.5,
                "sampler_name": "ddim",
                "scheduler": "ddim_uniform",
                "positive": ["text", 0],
                "negative": ["text", 0],
                "latent_image": ["latent", 0],
                "denoise": 1.0,
            },
        }
        return comfy_host.run(prompt, targets=["ksampler"]).outputs("ksampler")[0]["samples"]

    assert torch.equal(run(2**64 - 1), run(2**63 - 1))


# --- linked inputs given literals, and a MODEL without the X-Dyna patch ---------------------------------------

LITERALS = {
    "patched.model": ("my_model.safetensors", "X-Dyna Apply Dynamics-Adapter", "must be a MODEL", "X-Dyna Load Model"),
    "patched.xdyna": (
        3,
        "X-Dyna Apply Dynamics-Adapter",
        "must be X-Dyna weights",
        "xdyna output of X-Dyna Load Model",
    ),
    "patched.reference": (
        "ref",
        "X-Dyna Apply Dynamics-Adapter",
        "must be an X-Dyna reference",
        "X-Dyna Load Reference",
    ),
    "sampler.model": ("m", "X-Dyna Temporal Sampler", "must be a MODEL", "X-Dyna Apply Dynamics-Adapter"),
    "sampler.positive": ("a dancer", "X-Dyna Temporal Sampler", "must be a CONDITIONING", "CLIP Text Encode"),
    "sampler.reference": (1.5, "X-Dyna Temporal Sampler", "must be an X-Dyna reference", "X-Dyna Load Reference"),
    "sampler.pose_images": (
        "poses",
        "X-Dyna Temporal Sampler",
        "must be an IMAGE batch or X-Dyna pose frames",
        "Render Pose",
    ),
    "controls.negative": ("", "X-Dyna Apply ControlNets", "must be a CONDITIONING", "CLIP Text Encode"),
    "controls.pose_controlnet": (
        "pose.safetensors",
        "X-Dyna Apply ControlNets",
        "must be a CONTROL_NET",
        "Load ControlNet",
    ),
    "reference.image": ("reference_1.png", "X-Dyna Load Reference", "must be an IMAGE", "Load Image"),
    "reference.vae": ("vae.safetensors", "X-Dyna Load Reference", "must be a VAE", "checkpoint loader"),
    "reference.clip_vision": (0, "X-Dyna Load Reference", "must be a CLIP_VISION model", "Load CLIP Vision"),
}


@pytest.mark.parametrize("where", list(LITERALS))
def test_literals_where_links_belong_are_named(comfy_host, files, where):
    value, display, found, source = LITERALS[where]
    name = where.split(".")[1]
    message = failure(comfy_host, video_graph(**{where: value}))
    assert_names(message, f"{display}: the {name} input {found}, but it is ", source, LINK)


def test_hints_to_images_names_a_literal(comfy_host, files):
    prompt = {
        "show": {
            "class_type": "XDyna_HintsToImages",
            "inputs": {"hints": "poses", "start": 0, "count": 1, "stride": 1, "face_canvases": "local"},
        }
    }
    assert_names(
        failure(comfy_host, prompt, "show"), "X-Dyna Hints to Images: the hints input must be pose frames", LINK
    )


def test_a_model_without_the_x_dyna_patch_is_refused(comfy_host, files):
    message = failure(comfy_host, video_graph(**{"sampler.model": ["model", 0]}))
    assert_names(
        message,
        "X-Dyna Temporal Sampler: the model input is a MODEL without the X-Dyna patch",
        "pass it through X-Dyna Apply Dynamics-Adapter first",
    )


# --- sizes and frame counts (checked once when the run starts) ------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "parts"),
    [
        (
            {"reference.width": 32, "reference.height": 32},
            ("pose ControlNet hint is 48x64 pixels but the video is 32x32", "one generation size"),
        ),
        (
            {"poses.frames": FRAMES - 1},
            (f"hint has {FRAMES - 1} frames but the video has {FRAMES}", "one hint frame per video frame"),
        ),
        (
            {"pose_cn.control_net_name": "bad-wide-pose.safetensors"},
            ("block widths 32/64/128/128", "load X-Dyna's own ControlNet"),
        ),
    ],
    ids=["reference-size", "frame-count", "controlnet-width"],
)
def test_sizes_and_frame_counts_must_agree(comfy_host, files, changes, parts):
    assert_names(failure(comfy_host, video_graph(**changes)), *parts)


# --- wrong files ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("where", "name", "parts"),
    [
        ("model.ckpt_name", "bad-inpaint.safetensors", ("this is an inpainting UNet", "unet-checkpoint-epoch-5.ckpt")),
        ("model.ckpt_name", "bad-missing-one.safetensors", ("lack 1 tensor of the SD1.5 layout", "download it again")),
        ("model.ckpt_name", "bad-random.ckpt", ("not a PyTorch weight file", "Download the model file again")),
        ("model.ckpt_name", "bad-pointer.safetensors", ("this is a Git LFS pointer, not the model", "git lfs pull")),
        (
            "reference.ip_adapter",
            "bad-ip-other-encoder.bin",
            (
                "reads 64-wide image features, but the CLIP vision model gives 32-wide",
                "ip-adapter-plus_sd15.bin with CLIP ViT-H/14",
            ),
        ),
        ("reference.ip_adapter", "bad-random.bin", ("not a PyTorch weight file", "Download the model file again")),
        (
            "pose_cn.control_net_name",
            "bad-pose-missing-one.safetensors",
            ("do not fit the SD1.5 layout", "controlnet-checkpoint-epoch-5.ckpt"),
        ),
    ],
)
def test_wrong_weight_files_are_named(comfy_host, files, where, name, parts):
    message = failure(comfy_host, video_graph(**{where: name}))
    assert_names(message, name, *parts)


@pytest.fixture
def broken_dwpose(comfy_host, tmp_path, monkeypatch):
    """The released DWPose names in a folder of their own, the detector broken in the way each test picks."""
    folder = dwpose_folder(tmp_path / "dwpose")
    monkeypatch.setitem(comfy_host.folder_paths.folder_names_and_paths, "xdyna_dwpose", ([str(folder)], {".onnx"}))
    return folder / "yolox_l.onnx"


@pytest.mark.parametrize(
    ("damage", "parts"),
    [
        ("truncated", ("cannot read this ONNX model (InvalidProtobuf", "Delete it and run the node again")),
        ("pointer", ("this is a Git LFS pointer, not the model", "git lfs pull")),
    ],
)
def test_broken_onnx_files_are_named(comfy_host, files, broken_dwpose, damage, parts):
    if damage == "truncated":
        broken_dwpose.write_bytes(broken_dwpose.read_bytes()[:5000])
    else:
        broken_dwpose.write_text(LFS_POINTER)
    message = failure(comfy_host, image_graph("dwpose", "none", 2), "dwpose")
    assert_names(message, str(broken_dwpose), *parts)


# --- keypoints --------------------------------------------------------------------------------------------------

DEEP = "[" * 100_000 + "]" * 100_000
WIDE = '[{"people": [], "canvas_width": "wide", "canvas_height": 64}]'


@pytest.mark.parametrize(
    ("value", "found"), [(DEEP, "nested too deeply"), (WIDE, "canvas_width is 'wide', not a number")]
)
@pytest.mark.parametrize("target", ["render", "retarget", "face"])
def test_unreadable_keypoints_are_named(comfy_host, files, value, found, target):
    if target == "face":
        prompt, name, display = image_graph("face", "none", 1), "pose_keypoint", "X-Dyna Face Cropper (S-Face)"
        prompt["face"]["inputs"]["pose_keypoint"] = value
    elif target == "render":
        name, display = "pose_keypoint", "X-Dyna Render Pose"
        inputs = {"pose_keypoint": value, "width": WIDTH, "height": HEIGHT, "stick_width": 4, "point_radius": 4}
        inputs.update(draw_hands=True, draw_head=False, draw_face=False)
        prompt = {"render": {"class_type": "XDyna_RenderPose", "inputs": inputs}}
    else:
        name, display = "driving_pose", "X-Dyna Pose Retarget"
        inputs = {"driving_pose": value, "reference_pose": POSE_JSON, "mode": "proportions", "anchor_frame": 0}
        inputs.update(driver_lengths="clip", smoothing=False, frame_rate=15.0, min_cutoff=1.0, beta=5.0)
        inputs.update(driving_person=0, reference_person=0)
        prompt = {"retarget": {"class_type": "XDyna_PoseRetarget", "inputs": inputs}}
    message = failure(comfy_host, prompt, target)
    assert_names(
        message, f"{display}: the {name} input is not readable POSE_KEYPOINT", found, "controlnet_aux-format JSON"
    )


def test_every_refused_defect_is_a_known_one():
    assert set(REFUSED) | set(CONVERTED) | {"none", "uint8_as_float"} == set(IMAGE_DEFECTS)
