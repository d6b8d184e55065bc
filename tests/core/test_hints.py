"""HintFrames: clips of ControlNet hints handed out a window at a time."""

from __future__ import annotations

import pytest
import torch

from xdyna_core.hints import ChannelStackHintFrames, HintFrames, TensorHintFrames, as_hint_frames


class CountingHints(HintFrames):
    """Renders frame i as the constant i / 100 and counts the frames it was asked for."""

    def __init__(self, n: int) -> None:
        self.n, self.asked = n, []

    num_frames = property(lambda self: self.n)
    height = property(lambda self: 3)
    width = property(lambda self: 2)
    channels = property(lambda self: 1)

    def _frames(self, index):
        self.asked.extend(index)
        return torch.tensor(index, dtype=torch.float32).div(100).reshape(-1, 1, 1, 1).expand(-1, 3, 2, 1).clone()


def test_tensor_hints_give_the_frames_asked_for_without_copying_the_clip():
    images = torch.rand(7, 4, 5, 3)
    hints = TensorHintFrames(images)
    assert hints.shape == (7, 4, 5, 3) and len(hints) == 7
    torch.testing.assert_close(hints.frames([5, 0, 5]), images[[5, 0, 5]], rtol=0, atol=0)
    torch.testing.assert_close(hints.frames(torch.tensor([2, 3])), images[2:4], rtol=0, atol=0)
    assert hints.images is images


def test_uint8_hints_are_scaled_to_unit_range():
    frames = torch.randint(0, 256, (3, 2, 2, 3), dtype=torch.uint8)
    out = TensorHintFrames(frames).frames([1])
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, frames[1:2].float() / 255, rtol=0, atol=0)


def test_value_range_is_per_channel_over_the_whole_clip_streamed_in_chunks():
    images = torch.rand(40, 3, 3, 2)
    images[33, 1, 1, 0] = -0.25  # outside the first chunks, so streaming must reach it
    images[17, 0, 2, 1] = 1.5
    low, high = TensorHintFrames(images).value_range()
    torch.testing.assert_close(low, images.amin((0, 1, 2)), rtol=0, atol=0)
    torch.testing.assert_close(high, images.amax((0, 1, 2)), rtol=0, atol=0)
    assert low[0] == -0.25 and high[1] == 1.5


def test_value_range_is_computed_once():
    hints = CountingHints(20)
    low, high = hints.value_range()
    assert float(low) == 0.0 and float(high) == pytest.approx(0.19)
    asked = len(hints.asked)
    hints.value_range()
    assert asked == 20 and len(hints.asked) == asked


def test_out_of_range_frames_are_refused_with_the_clip_length():
    with pytest.raises(IndexError, match="outside a clip of 4 frames"):
        TensorHintFrames(torch.zeros(4, 1, 1, 3)).frames([1, 4])


def test_a_subclass_giving_the_wrong_shape_is_caught():
    class Broken(CountingHints):
        def _frames(self, index):
            return torch.zeros(len(index), 3, 3, 1)

    with pytest.raises(RuntimeError, match="expected"):
        Broken(3).frames([0])


def test_channel_stack_concatenates_in_order():
    a, b = torch.rand(5, 4, 4, 3), torch.rand(5, 4, 4, 3)
    stacked = ChannelStackHintFrames([TensorHintFrames(a), TensorHintFrames(b)])
    assert stacked.channels == 6
    torch.testing.assert_close(stacked.frames([4, 1]), torch.cat([a, b], -1)[[4, 1]], rtol=0, atol=0)
    with pytest.raises(ValueError, match="differ in size"):
        ChannelStackHintFrames([TensorHintFrames(a), TensorHintFrames(b[:4])])


def test_as_hint_frames_wraps_tensors_and_passes_hint_frames_through():
    hints = CountingHints(2)
    assert as_hint_frames(hints) is hints
    assert isinstance(as_hint_frames(torch.zeros(1, 1, 1, 3)), TensorHintFrames)
    with pytest.raises(TypeError):
        as_hint_frames([1, 2])


# --- planar: the hints a ControlNet takes, [k, C, H, W] on its device -----------------------------------------


def planar_kinds():
    """One clip of every kind, 5 frames at 12×10: tensors (float, uint8), stacked, rendered pose and S-Face
    (driving frames at the generation size, at another size, and placed onto a retargeted head)."""
    from xdyna_core.face.condition import SFaceCondition
    from xdyna_core.pose.keypoints import PersonPose, PoseFrame, missing_points
    from xdyna_core.pose.pose_frames import PoseHintFrames

    gen = torch.Generator().manual_seed(4)
    images = torch.rand(5, 12, 10, 3, generator=gen)
    body = missing_points(18)
    body[1], body[2], body[5], body[8] = (5, 3, 1), (2, 4, 1), (8, 4, 1), (4, 10, 1)
    poses = [PoseFrame(10, 12, [PersonPose(body + [i % 2, 0, 0])]) for i in range(5)]
    boxes = torch.tensor([[2, 1, 8, 9]]).expand(5, 4)
    centres = torch.tensor([[3, 3], [6, 3], [5, 7]]).expand(5, 3, 2)
    # as is, scaled and turned (resampled), moved by whole pixels
    placements = torch.tensor([[1.0, 0, 0, 1.0, 0, 0], [0.9, 0.1, -0.1, 0.9, 0.6, 0.3], [1.0, 0, 0, 1.0, 2.2, -1.4]])
    placements = placements.repeat(2, 1)[:5]
    return {
        "tensor": TensorHintFrames(images),
        "uint8 tensor": TensorHintFrames(torch.randint(0, 256, (5, 12, 10, 6), dtype=torch.uint8, generator=gen)),
        "stack": ChannelStackHintFrames([TensorHintFrames(images), TensorHintFrames(images.flip(0))]),
        "default": CountingHints(5),
        "pose": PoseHintFrames(poses, 10, 12, stick_width=1, point_radius=1),
        "sface": SFaceCondition(images, 10, 12, boxes, centres, ["detected"] * 5),
        "sface resized": SFaceCondition(torch.rand(5, 24, 16, 3, generator=gen), 10, 12, boxes, centres, ["held"] * 5),
        "sface placed": SFaceCondition(images, 10, 12, boxes, centres, ["detected"] * 5, placements=placements),
    }


@pytest.mark.parametrize("kind", list(planar_kinds()))
def test_planar_frames_are_the_frames_channel_first_and_the_callers_own(kind):
    hints = planar_kinds()[kind]
    index = [4, 0, 4, 2]
    expected = hints.frames(index).movedim(-1, 1)
    planar = hints.planar(index, "cpu")
    assert planar.shape == (4, hints.channels, hints.height, hints.width) and planar.dtype == torch.float32
    torch.testing.assert_close(planar, expected, rtol=0, atol=0)
    assert planar.abs().sum() > 0  # something was drawn or cut: the comparison is not between two blanks
    if kind in ("pose", "sface", "sface resized", "sface placed"):
        assert planar.is_contiguous()  # drawn channel-planar: per-channel arithmetic runs over whole rows
    planar.fill_(-1.0)  # the caller may write to it (normalising in place): the clip is unchanged
    torch.testing.assert_close(hints.planar(index), expected, rtol=0, atol=0)
    torch.testing.assert_close(hints.frames(index).movedim(-1, 1), expected, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("ranges", ["clip", "none", "raised"])
@pytest.mark.parametrize("kind", list(planar_kinds()))
def test_prepared_frames_are_the_frames_normalised_and_cast_bit_for_bit(kind, ranges, dtype, monkeypatch):
    """`prepared` (what a ControlNet is fed) = `where(high > low, (x - low) / (high - low), x)` of the frames,
    in float32, then cast. Drawn and cut kinds (black outside a part of each frame) normalise only that part
    when black stays black (each varying channel's clip minimum 0, as the clip's own ranges give them), and
    the whole frames otherwise."""
    hints = planar_kinds()[kind]
    low, high = hints.value_range()
    if ranges == "raised":
        low = low + 0.01
    given = None if ranges == "none" else (low, high)
    index = [4, 0, 4, 2]
    x = hints.frames(index).movedim(-1, 1)
    lo, hi = low.reshape(1, -1, 1, 1), high.reshape(1, -1, 1, 1)
    expected = x if given is None else torch.where(hi > lo, (x - lo) / torch.where(hi > lo, hi - lo, 1.0), x)
    whole = []
    planar = type(hints)._planar
    monkeypatch.setattr(type(hints), "_planar", lambda self, *a: whole.append(a) or planar(self, *a))
    out = hints.prepared(index, "cpu", dtype, given)
    assert out.dtype == dtype and out.shape == (4, hints.channels, hints.height, hints.width)
    assert torch.equal(out, expected.to(dtype)) and out.abs().sum() > 0
    lit = kind in ("pose", "sface", "sface resized", "sface placed")
    assert bool(whole) == (not lit or ranges == "raised")
    if lit and ranges == "clip":
        assert low.max() == 0  # the clip's own ranges keep black black


def test_planar_checks_indices_and_what_a_subclass_gives():
    with pytest.raises(IndexError, match="outside a clip of 4 frames"):
        TensorHintFrames(torch.zeros(4, 1, 1, 3)).planar([4])

    class Half(CountingHints):
        def _planar(self, index, device):
            return super()._planar(index, device).half()

    with pytest.raises(RuntimeError, match="expected float32"):
        Half(3).planar([0])
