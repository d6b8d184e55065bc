"""Node-input checks (xdyna_core.validation) and the seed mapping, without ComfyUI.

The same checks run inside real graphs in tests/host/test_bad_inputs.py; here each rule is pinned down on its
own: what is converted (and to exactly what), what is refused, and that the message names the input and a fix.
"""

from __future__ import annotations

import json

import pytest
import torch

from xdyna_core.latents import mask_generator, sharp_mask
from xdyna_core.pose.keypoints import PoseFormatError, frames_from_pose_keypoint
from xdyna_core.seeds import SEED_MAX, torch_seed
from xdyna_core.validation import (
    XDynaInputError,
    finite_number,
    image_batch,
    nonfinite_frames,
    percent_range,
    reading_poses,
    require_conditioning,
    require_finite,
    seed_value,
)
from xdyna_core.windows import window_offsets

NODE = "X-Dyna Test Node"


def clip(frames=4, height=8, width=6, channels=3, seed=0) -> torch.Tensor:
    return torch.rand(frames, height, width, channels, generator=torch.Generator().manual_seed(seed))


# --- finiteness ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_one_bad_value_in_one_frame_of_a_100_frame_clip_is_found(bad):
    video = clip(frames=100, height=64, width=48)
    video[57, 31, 17, 1] = bad
    assert nonfinite_frames(video) == [57]
    with pytest.raises(XDynaInputError) as err:
        image_batch(video, NODE, "image")
    message = str(err.value)
    assert message.startswith(f"{NODE}: the image input holds ")
    assert ("NaN" if bad != bad else "infinite values") in message
    assert "frame 57 of 100" in message and "check it" in message


def test_a_finite_clip_passes_unchanged_and_uncopied():
    video = clip(frames=100)
    assert nonfinite_frames(video) == []
    assert image_batch(video, NODE) is video
    slightly_over = video * 1.05  # resampling overshoot is used as it is
    assert image_batch(slightly_over, NODE) is slightly_over


def test_frames_holding_nan_are_listed_in_the_message():
    latent = torch.zeros(12, 4, 2, 3)
    latent[[2, 3, 5, 7, 8, 11]] = float("nan")
    with pytest.raises(
        XDynaInputError, match=r"the sampled video holds NaN in frames 2, 3, 5, 7, 8 and 1 more of 12; fix"
    ):
        require_finite(latent, NODE, "the sampled video", "fix")


# --- conversions -------------------------------------------------------------------------------------------


def test_unambiguous_images_are_converted():
    rgb = clip()
    as_uint8 = (rgb * 255).round().to(torch.uint8)
    torch.testing.assert_close(image_batch(as_uint8, NODE), as_uint8.float() / 255, rtol=0, atol=0)
    for dtype in (torch.float16, torch.bfloat16, torch.float64):
        converted = image_batch(rgb.to(dtype), NODE)
        assert converted.dtype == torch.float32
        assert torch.equal(converted, rgb.to(dtype).float())
    gray = rgb[..., :1]
    assert torch.equal(image_batch(gray, NODE), gray.expand(-1, -1, -1, 3))
    opaque = torch.cat([rgb, torch.ones_like(rgb[..., :1])], dim=-1)
    assert torch.equal(image_batch(opaque, NODE), rgb)
    one_image = rgb[0]
    assert torch.equal(image_batch(one_image, NODE), rgb[:1])


@pytest.mark.parametrize(
    ("make", "found", "fix"),
    [
        (lambda: torch.cat([clip(), torch.full((4, 8, 6, 1), 0.5)], -1), "transparent pixels", "on a background"),
        (lambda: clip(channels=2), "2 channels per pixel", "give an RGB IMAGE"),
        (lambda: clip(channels=6), "6 channels per pixel", "give an RGB IMAGE"),
        (lambda: clip(channels=3).movedim(-1, 1), "looks channels-first", "move the channels last"),
        (lambda: torch.rand(2, 8, 6), "is a 3-D tensor [2, 8, 6]", "Convert Mask to Image"),
        (lambda: torch.rand(1, 2, 8, 6, 3), "is a 5-D tensor", "one batch of frames"),
        (lambda: clip()[:0], "is an empty batch (0 frames)", "check the node before it"),
        (lambda: (clip() * 100).int(), "holds torch.int32 values", "x.float() / 255"),
        (lambda: clip() * 255, "holds values from", "divide them by 255"),
        (lambda: clip() * 2 - 1, "holds values from", "(x + 1) / 2"),
        (lambda: "reference.png", "must be an IMAGE, but it is the text 'reference.png'", "[node_id, output_index]"),
    ],
)
def test_ambiguous_or_broken_images_are_refused_with_the_fix(make, found, fix):
    with pytest.raises(XDynaInputError) as err:
        image_batch(make(), NODE, "image")
    message = str(err.value)
    assert message.startswith(f"{NODE}: the image input ")
    assert found in message and fix in message


def test_hints_keep_their_channels_and_range():
    face = clip(channels=6) * 3 - 1  # any range: hints are min-max normalised
    assert image_batch(face, NODE, "face_condition", channels=None, check_range=False) is face
    face[1, 2, 3, 4] = float("nan")
    with pytest.raises(XDynaInputError, match="face_condition input holds NaN in frame 1 of 4"):
        image_batch(face, NODE, "face_condition", channels=None, check_range=False)


def test_hints_stay_compact():
    """Hint clips are read a window at a time and converted then: a uint8 or fp16 clip is not copied to float32."""
    poses = (clip(frames=10) * 255).round().to(torch.uint8)
    assert image_batch(poses, NODE, "pose_images", check_range=False, to_float=False) is poses
    half = clip(frames=10).half()
    assert image_batch(half, NODE, "pose_images", check_range=False, to_float=False) is half
    half[3, 0, 0, 0] = float("inf")
    with pytest.raises(XDynaInputError, match="holds infinite values in frame 3 of 10"):
        image_batch(half, NODE, "pose_images", check_range=False, to_float=False)
    opaque = torch.cat([poses, torch.full_like(poses[..., :1], 255)], dim=-1)
    assert torch.equal(image_batch(opaque, NODE, "pose_images", check_range=False, to_float=False), poses)
    see_through = torch.cat([poses, torch.full_like(poses[..., :1], 128)], dim=-1)
    with pytest.raises(XDynaInputError, match="transparent pixels"):
        image_batch(see_through, NODE, "pose_images", check_range=False, to_float=False)


# --- numbers, conditioning, poses -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "found"),
    [
        (float("nan"), "is nan"),
        (float("inf"), "is inf"),
        (7.5e9, "is 7.5e+09"),
        ("7.5", "must be a number, but it is the text '7.5'"),
    ],
)
def test_float_settings_must_be_finite_and_in_range(value, found):
    with pytest.raises(XDynaInputError) as err:
        finite_number(value, NODE, "cfg", 0.0, 100.0)
    assert f"{NODE}: the cfg input {found}" in str(err.value) and "give a number from 0 to 100" in str(err.value)
    assert finite_number(7, NODE, "cfg", 0.0, 100.0) == 7.0


def test_a_controlnet_range_that_never_acts_is_refused():
    assert percent_range(0.2, 0.8, NODE, "pose") == (0.2, 0.8)
    with pytest.raises(XDynaInputError, match="pose_start input is 0.9, after pose_end .* set pose_start below"):
        percent_range(0.9, 0.1, NODE, "pose")
    with pytest.raises(XDynaInputError, match="the face_end input is nan"):
        percent_range(0.0, float("nan"), NODE, "face")


def test_conditioning_must_be_conditioning_and_finite():
    text = [[torch.zeros(1, 77, 8), {}]]
    assert require_conditioning(text, NODE, "positive") is text
    with pytest.raises(TypeError, match="positive input must be a CONDITIONING, but it is the text 'a cat'"):
        require_conditioning("a cat", NODE, "positive")
    with pytest.raises(XDynaInputError, match="negative input holds NaN or infinite values.*--fp32-text-enc"):
        require_conditioning([[torch.full((1, 77, 8), float("nan")), {}]], NODE, "negative")


@pytest.mark.parametrize(
    ("value", "found"),
    [
        ("[" * 200_000 + "]" * 200_000, "nested too deeply"),
        ([{"people": [], "canvas_width": "wide", "canvas_height": 64}], "canvas_width is 'wide', not a number"),
        ([{"people": [], "canvas_width": 64, "canvas_height": float("nan")}], "canvas_height is nan, not a number"),
        ([{"people": [], "canvas_width": 64, "canvas_height": [64]}], "canvas_height is [64], not a number"),
    ],
)
def test_unreadable_pose_keypoints_name_the_input(value, found):
    with pytest.raises(PoseFormatError) as err:
        with reading_poses(NODE, "pose_keypoint"):
            frames_from_pose_keypoint(value)
    message = str(err.value)
    assert message.startswith(f"{NODE}: the pose_keypoint input is not readable POSE_KEYPOINT")
    assert found in message and "controlnet_aux-format JSON" in message


def test_numeric_canvas_text_is_still_read():
    (frame,) = frames_from_pose_keypoint(json.dumps([{"people": [], "canvas_width": "512", "canvas_height": 896.0}]))
    assert (frame.width, frame.height) == (512, 896)


# --- seeds --------------------------------------------------------------------------------------------------


def test_seeds_are_read_modulo_2_63_without_changing_any_draw():
    assert torch_seed(0) == 0 and torch_seed(2**63 - 1) == 2**63 - 1
    assert torch_seed(SEED_MAX) == 2**63 - 1 and torch_seed(2**63 + 5) == 5
    assert seed_value(SEED_MAX, NODE) == 2**63 - 1
    # ComfyUI seeds generators with seed + 1: the top of the widget's range must leave room for it
    torch.Generator().manual_seed(seed_value(SEED_MAX, NODE) + 1)
    for seed in (0, 7, 2**40 + 3, SEED_MAX):
        # torch's CPU generator reads the low 32 bits of its seed, which the mapping keeps: the same draws
        expected = torch.rand(5, generator=torch.Generator().manual_seed(seed))
        assert torch.equal(torch.rand(5, generator=torch.Generator().manual_seed(torch_seed(seed))), expected)
    assert torch.equal(sharp_mask(3, 4, 2, 2, mask_generator(5)), sharp_mask(3, 4, 2, 2, mask_generator(2**63 + 5)))
    assert window_offsets(SEED_MAX, 6) == window_offsets(2**63 - 1, 6)


@pytest.mark.parametrize(("seed", "found"), [(-1, "is the number -1"), (2**64, "is the number"), ("7", "the text")])
def test_seeds_outside_the_widget_range_are_refused(seed, found):
    with pytest.raises(XDynaInputError) as err:
        seed_value(seed, NODE)
    assert found in str(err.value) and f"give a whole number from 0 to {SEED_MAX}" in str(err.value)
