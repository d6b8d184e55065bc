"""S-Face canvases following a retargeted head: the placement fit, gaps, the resampling, and real footage."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.fixtures.example_footage import example_footage
from xdyna_core.face import sface_condition_from_pose
from xdyna_core.face.condition import SFaceCondition
from xdyna_core.face.follow import (
    IDENTITY,
    head_placement,
    head_placements,
    lit_box,
    place_canvas,
    place_face,
    resample_dtype,
)
from xdyna_core.face.landmarks import FEATURE_SLICES
from xdyna_core.pose.keypoints import PoseFrame, frames_to_pose_keypoint
from xdyna_core.pose.retarget import retarget_frames


def placement(scale: float, dx: float, dy: float) -> np.ndarray:
    return np.array([scale, 0.0, 0.0, scale, dx, dy])


def test_the_fit_recovers_scale_and_shift_from_the_landmarks_and_else_the_head():
    rng = np.random.default_rng(0)
    face, head = rng.uniform(50, 150, (68, 2)), rng.uniform(50, 150, (5, 2))
    face[[3, 40]] = np.nan  # missing landmarks are left out of the fit
    moved_face, moved_head = 0.8 * face + [12, -7], 1.25 * head + [-3, 20]
    np.testing.assert_allclose(
        head_placement((face, head), (moved_face, moved_head)), placement(0.8, 12, -7), atol=1e-9
    )
    # no landmarks on one side: the body's head keypoints place it
    np.testing.assert_allclose(
        head_placement((None, head), (moved_face, moved_head)), placement(1.25, -3, 20), atol=1e-9
    )
    assert head_placement((None, head), (moved_face, None)) is None
    assert head_placement((face[:1], None), (moved_face[:1], None)) is None  # one point fixes no scale


def test_frames_without_a_fit_are_interpolated_and_the_ends_held():
    rng = np.random.default_rng(1)
    face = rng.uniform(0, 100, (68, 2))
    missing = (None, None)
    sources = [missing, (face, None), missing, (face, None), missing]
    targets = [missing, (face + [10, 0], None), missing, (2 * face + [0, 30], None), (face, None)]
    rows = head_placements(sources, targets)
    np.testing.assert_allclose(rows[0], placement(1, 10, 0), atol=1e-9)
    np.testing.assert_allclose(rows[2], placement(1.5, 5, 15), atol=1e-9)
    np.testing.assert_allclose(rows[4], placement(2, 0, 30), atol=1e-9)
    np.testing.assert_array_equal(head_placements([missing] * 3, [missing] * 3), np.tile(IDENTITY, (3, 1)))


def test_placing_a_canvas_moves_and_scales_its_pixels():
    canvas = torch.zeros(20, 24, 3)
    canvas[4:6, 3:5] = torch.tensor([0.2, 0.5, 0.9])
    assert place_canvas(canvas, IDENTITY) is canvas
    assert place_canvas(canvas, placement(1.0002, 0.4, -0.3)) is canvas  # under half a pixel: nothing moves
    for dx, dy in ((7, 2), (-3, 12), (-2.6, -3.6)):  # translations move whole pixels, exactly
        shifted = place_canvas(canvas, placement(1, dx, dy))
        torch.testing.assert_close(shifted, torch.roll(canvas, (round(dy), round(dx)), (0, 1)), rtol=0, atol=0)
    assert not place_canvas(canvas, placement(1, 30, 0)).any()  # moved off the canvas
    doubled = place_canvas(canvas, placement(2, 0, 0))  # pixels [3, 5) x [4, 6) cover [6, 10) x [8, 12)
    rows, cols = torch.nonzero(doubled.abs().sum(-1) > 1e-6, as_tuple=True)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (7, 12, 5, 10)  # bilinear: half a pixel either side
    torch.testing.assert_close(doubled[9:11, 7:9], canvas[4:5, 3:4].expand(2, 2, 3), rtol=0, atol=1e-6)
    assert float(doubled.sum()) == pytest.approx(4 * float(canvas.sum()), rel=1e-6)  # 4x the area, same colour


def condition(placements=None) -> SFaceCondition:
    frames = torch.rand(3, 32, 40, 3, generator=torch.Generator().manual_seed(2))
    boxes = torch.tensor([[8, 6, 24, 22]] * 3)
    centres = torch.tensor([[[12, 11], [20, 11], [16, 18]]] * 3)
    return SFaceCondition(frames, 40, 32, boxes, centres, ["detected"] * 3, placements=placements)


def test_a_condition_cuts_then_places_each_frame():
    plain = condition().hint()
    torch.testing.assert_close(condition(torch.from_numpy(np.tile(IDENTITY, (3, 1)))).hint(), plain, rtol=0, atol=0)
    rows = torch.from_numpy(np.stack([IDENTITY, placement(1, -3, 4), placement(0.5, 10, 2)]))
    placed = condition(rows)
    hint = placed.hint([2, 0, 1])
    for k, i in enumerate([2, 0, 1]):
        torch.testing.assert_close(hint[k], place_canvas(plain[i], rows[i]), rtol=0, atol=0)
    assert placed.held_bytes() == condition().held_bytes() + 3 * 6 * 8
    assert '"placement": [0.5, 0.0, 0.0, 0.5, 10.0, 2.0]' in placed.to_json()
    with pytest.raises(ValueError, match=r"\[F, 6\] finite placements"):
        condition(torch.zeros(2, 6))


# --- real footage ---------------------------------------------------------------------------------------------

W, H = 256, 448  # the driving video and the reference are 512 x 896: half size, the same aspect


@pytest.fixture(scope="module")
def footage(shared_data):
    clip = example_footage(shared_data)
    return torch.from_numpy(np.stack(clip.frames)).float() / 255.0, clip.driving, clip.reference


def drawn_feature_centres(frame: PoseFrame) -> np.ndarray | None:
    """Mean of the eye and mouth centres of a pose's face where a renderer draws it at W x H."""
    person = frame.resized(W, H).people[0] if frame.people else None
    if person is None or person.face is None:
        return None
    xy = person.face[:68, :2]
    return np.mean([xy[s].mean(axis=0) for s in FEATURE_SLICES], axis=0)


def patch_centroids(cond: SFaceCondition) -> np.ndarray:
    """Per frame, the centroid of the local canvas' pixels (the eye and mouth patches)."""
    local = cond.local_canvases().abs().sum(-1) > 0
    ys, xs = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")
    count = local.sum((1, 2)).clamp(min=1)
    return torch.stack([(xs * local).sum((1, 2)) / count, (ys * local).sum((1, 2)) / count], -1).numpy()


def test_real_footage_the_patches_sit_on_the_retargeted_head(footage):
    images, driving, reference = footage
    retargeted, _ = retarget_frames(reference, driving, mode="limbs")
    kwargs = dict(stabilize=False, smoothing=0.0)  # per-frame landmarks, so the patches are where the face is
    follow = sface_condition_from_pose(
        images, frames_to_pose_keypoint(driving), W, H, follow_pose=frames_to_pose_keypoint(retargeted), **kwargs
    )
    stay = sface_condition_from_pose(images, frames_to_pose_keypoint(driving), W, H, **kwargs)
    target = [drawn_feature_centres(f) for f in retargeted]
    frames = [i for i, t in enumerate(target) if t is not None and follow.status[i] == "detected"]
    assert len(frames) >= 0.8 * len(target)
    errors = {}
    for name, cond in (("follow", follow), ("stay", stay)):
        centroids = patch_centroids(cond)
        errors[name] = np.array([np.hypot(*(centroids[i] - target[i])) for i in frames])
    assert np.median(errors["follow"]) < 1.0 and errors["follow"].max() < 2.0, errors["follow"]  # measured 0.3, 0.6
    assert np.median(errors["stay"]) > 10.0, errors["stay"]  # measured 35: limbs mode puts the body elsewhere


def test_real_footage_following_the_driving_poses_themselves_changes_nothing(footage):
    images, driving, _ = footage
    pose = frames_to_pose_keypoint(driving)
    same = sface_condition_from_pose(images, pose, W, H, follow_pose=pose)
    torch.testing.assert_close(same.hint(), sface_condition_from_pose(images, pose, W, H).hint(), rtol=0, atol=0)


def resampled_everywhere(canvas: torch.Tensor, row: np.ndarray) -> torch.Tensor:
    """The bilinear placement computed for every output pixel from the whole canvas (the plain definition)."""
    height, width = canvas.shape[:2]
    matrix, offset = torch.as_tensor(row[:4]).reshape(2, 2), torch.as_tensor(row[4:])
    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=torch.float64) + 0.5, torch.arange(width, dtype=torch.float64) + 0.5, indexing="ij"
    )
    source = (torch.stack([xs, ys], dim=-1) - offset) @ torch.linalg.inv(matrix).T
    grid = (2.0 * source / torch.tensor([width, height], dtype=torch.float64) - 1.0).unsqueeze(0)
    image = canvas.permute(2, 0, 1).unsqueeze(0).to(torch.float64)
    placed = torch.nn.functional.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return placed[0].permute(1, 2, 0).to(canvas.dtype)


@pytest.mark.parametrize("case", range(12))
def test_a_scaled_or_turned_canvas_is_resampled_only_where_the_face_lands(case):
    """Resampling only the placed face box gives the whole-canvas bilinear placement: the same values where the
    face lands (to float32 rounding) and exactly black everywhere else, also for faces at or over the edges."""
    gen = torch.Generator().manual_seed(case)
    canvas = torch.zeros(90, 60, 6)
    top, left = int(torch.randint(-10, 80, (1,), generator=gen)), int(torch.randint(-10, 50, (1,), generator=gen))
    box = (slice(max(top, 0), top + 25), slice(max(left, 0), left + 18))
    canvas[box] = torch.rand(canvas[box].shape, generator=gen) - 0.2 * (case % 2)  # some cases hold negatives
    scale, turn = 0.5 + 1.5 * float(torch.rand(1, generator=gen)), float(torch.rand(1, generator=gen)) - 0.5
    matrix = scale * np.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]])
    row = np.concatenate([matrix.reshape(-1), 30 * torch.randn(2, generator=gen).numpy()])
    expected, placed = resampled_everywhere(canvas, row), place_canvas(canvas, row)
    torch.testing.assert_close(placed, expected, rtol=0, atol=1e-6)
    lit = lit_box(canvas)
    region = place_face(canvas[lit[0] : lit[1], lit[2] : lit[3]], (lit[0], lit[2]), (90, 60), row)
    outside = torch.ones(90, 60, dtype=torch.bool)
    if region is not None:
        outside[region[0], region[1]] = False
    assert not expected[outside].any() and not placed[outside].any()  # the region holds every pixel it reaches
    assert region is None or expected.any()


def test_on_an_accelerator_a_real_size_face_is_resampled_in_float32_close_to_the_float64_placement():
    """What a GPU runs (float32: CUDA's float64 is slow, MPS has none), here on the CPU at 512 x 896 with a face box
    of a close-up: within 1e-4 of the float64 definition, a fifth of a half-precision hint's step near 1."""
    assert resample_dtype(torch.device("cpu")) == torch.float64
    assert resample_dtype(torch.device("cuda")) == resample_dtype(torch.device("mps")) == torch.float32
    gen = torch.Generator().manual_seed(5)
    canvas = torch.zeros(896, 512, 6)
    canvas[300:640, 150:410] = torch.rand(340, 260, 6, generator=gen)
    row = np.concatenate(
        [1.1 * np.array([[np.cos(0.2), -np.sin(0.2)], [np.sin(0.2), np.cos(0.2)]]).reshape(-1), [-40.3, 12.7]]
    )
    expected = resampled_everywhere(canvas, row)
    rows, cols, values = place_face(canvas[300:640, 150:410], (300, 150), (896, 512), row, dtype=torch.float32)
    assert values.dtype == torch.float32
    torch.testing.assert_close(values, expected[rows, cols], rtol=0, atol=1e-4)
    float64 = place_face(canvas[300:640, 150:410], (300, 150), (896, 512), row)[2]
    assert (values - float64).abs().max() > 0  # the float32 path really ran in float32


def test_the_lit_box_bounds_every_non_black_pixel():
    canvas = torch.zeros(30, 20, 6)
    assert lit_box(canvas) is None and not place_canvas(canvas, placement(2, 1, 1)).any()
    canvas[4, 7, 5], canvas[11, 2, 0], canvas[9, 15, 3] = 0.5, -0.25, 1.0
    assert lit_box(canvas) == (4, 12, 2, 16) == lit_box(canvas.permute(2, 0, 1).contiguous().permute(1, 2, 0))


def test_a_face_box_moved_by_whole_pixels_is_clipped_at_the_canvas_edges():
    face = torch.arange(1.0, 13.0).reshape(3, 4, 1)
    rows, cols, values = place_face(face, (2, 3), (6, 8), placement(1, 2, -3))  # to rows -1..2, cols 5..9
    assert (rows, cols) == (slice(0, 2), slice(5, 8))
    torch.testing.assert_close(values, face[1:3, 0:3], rtol=0, atol=0)
    assert place_face(face, (2, 3), (6, 8), placement(1, 9, 0)) is None
