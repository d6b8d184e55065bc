"""S-Face box arithmetic and canvases against an independent re-statement of the release (docs/xdyna_model.md §5)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xdyna_core.face.condition import SFaceCondition
from xdyna_core.face.sface import (
    bounds_inside,
    cut_canvases,
    expand_bounds,
    face_box,
    feature_centres,
    landmark_bounds,
    patch_half_size,
    render_canvases,
)
from xdyna_core.image_prep import RESIZE_METHODS, fit_to_size


def official_sface(img: np.ndarray, lmks: np.ndarray):
    """The release's per-frame S-Face step for a detected face, re-stated from the spec with numpy slicing."""
    height, width = img.shape[:2]
    global_viz = np.zeros_like(img)
    left_eye = np.round(np.mean(lmks[43:48], axis=0)).astype(np.int32)
    right_eye = np.round(np.mean(lmks[37:42], axis=0)).astype(np.int32)
    mouth = np.round(np.mean(lmks[49:68], axis=0)).astype(np.int32)
    x0, x1 = np.amin(lmks[:, 0]), np.amax(lmks[:, 0])
    y0, y1 = np.amin(lmks[:, 1]), np.amax(lmks[:, 1])
    size = max(x1 - x0, y1 - y0)
    cx, cy = (x0 + x1) * 0.5, (y0 + y1) * 0.5
    left, top = int(cx - 1.35 * size), int(cy - 1.25 * size)
    right, bottom = int(cx + 1.35 * size), int(cy + 1.45 * size)
    left, top, right, bottom = max(0, left), max(0, top), min(width, right), min(height, bottom)
    global_viz[top:bottom, left:right] = img[top:bottom, left:right]
    hw, hh = int(((right - left) / 512) * 64), int(((bottom - top) / 512) * 64)
    local_viz = np.zeros_like(img)
    for cx_, cy_ in (left_eye, right_eye, mouth):
        rows, cols = slice(cy_ - hh, cy_ + hh), slice(cx_ - hw, cx_ + hw)
        local_viz[rows, cols] = img[rows, cols]
    return local_viz, global_viz, (left, top, right, bottom), np.stack([left_eye, right_eye, mouth])


def random_face(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """68 points scattered in a random box that may cross any frame border, some on the half-pixel grid."""
    size = rng.uniform(2, 0.8 * max(width, height))
    cx = rng.uniform(-0.2 * width, 1.2 * width)
    cy = rng.uniform(-0.2 * height, 1.2 * height)
    pts = np.stack([rng.uniform(cx - size / 2, cx + size / 2, 68), rng.uniform(cy - size / 2, cy + size / 2, 68)], 1)
    if rng.random() < 0.3:
        pts = np.round(pts * 2) / 2  # ties for the rounding of the patch centres
    return pts


def our_sface(img: np.ndarray, lmks: np.ndarray, border: str):
    height, width = img.shape[:2]
    box = face_box(lmks, width, height)
    centres = feature_centres(lmks)
    frames = torch.from_numpy(img)[None]
    local, glob = render_canvases(frames, [box], [centres], border=border)
    return local[0].numpy(), glob[0].numpy(), box, centres


def crosses_top_or_left(centres: np.ndarray, box) -> bool:
    hw, hh = patch_half_size(box)
    return any(x - hw < 0 or y - hh < 0 for x, y in centres)


def test_random_landmarks_match_the_release_pixel_for_pixel():
    rng = np.random.default_rng(0)
    compared_clip = 0
    for trial in range(300):
        width, height = int(rng.integers(16, 97)), int(rng.integers(16, 129))
        img = rng.random((height, width, 3), dtype=np.float32)
        lmks = random_face(rng, width, height)
        ref_local, ref_global, ref_box, ref_centres = official_sface(img, lmks)
        local, glob, box, centres = our_sface(img, lmks, border="release")
        if ref_box[2] <= ref_box[0] or ref_box[3] <= ref_box[1]:
            # A face wholly outside the frame: the release's slices wrap into junk; ours are empty.
            assert box[2] <= box[0] or box[3] <= box[1]
            assert not glob.any() and not local.any()
            continue
        assert box == ref_box, trial
        np.testing.assert_array_equal(centres, ref_centres)
        np.testing.assert_array_equal(glob, ref_global, err_msg=f"trial {trial}")
        np.testing.assert_array_equal(local, ref_local, err_msg=f"trial {trial}")
        # Our default cut at the frame edges agrees wherever no patch starts before the left or top edge.
        if not crosses_top_or_left(centres, box):
            clip_local, _, _, _ = our_sface(img, lmks, border="clip")
            np.testing.assert_array_equal(clip_local, ref_local, err_msg=f"trial {trial}")
            compared_clip += 1
    assert compared_clip > 100


def test_box_arithmetic_by_hand():
    # Landmark bounds 100..140 × 200..250: L = 50, centre (120, 225).
    pts = np.array([[100.0, 200.0], [140.0, 250.0]] + [[120.0, 225.0]] * 66)
    assert landmark_bounds(pts) == (100.0, 200.0, 140.0, 250.0)
    # 120 - 67.5 = 52.5 → 52; 225 - 62.5 = 162.5 → 162; 120 + 67.5 = 187.5 → 187; 225 + 72.5 = 297.5 → 297.
    assert expand_bounds(landmark_bounds(pts)) == (52, 162, 187, 297)
    assert face_box(pts, 512, 896) == (52, 162, 187, 297)
    # Clamped at the frame: a 160×280 frame cuts right and bottom.
    assert face_box(pts, 160, 280) == (52, 162, 160, 280)
    # Truncation is toward zero, then clamped: a face at the top-left corner.
    corner = np.array([[0.4, 0.3], [10.4, 8.3]] + [[5.0, 5.0]] * 66)
    # L = 10, centre (5.4, 4.3): 5.4 - 13.5 = -8.1 → -8; 4.3 - 12.5 = -8.2 → -8; 18.9 → 18; 18.8 → 18.
    assert expand_bounds(landmark_bounds(corner)) == (-8, -8, 18, 18)
    assert face_box(corner, 64, 64) == (0, 0, 18, 18)


def test_patch_sizes_come_from_the_clamped_box():
    assert patch_half_size((52, 162, 187, 297)) == (16, 16)  # 135 / 8 = 16.875 → 16
    assert patch_half_size((0, 0, 18, 18)) == (2, 2)
    assert patch_half_size((52, 162, 160, 280)) == (13, 14)  # clamped: 108 / 8, 118 / 8
    for w in range(0, 2000):
        assert int((w / 512) * 64) == patch_half_size((0, 0, w, 0))[0]


def test_centre_ranges_and_rounding():
    pts = np.zeros((68, 2))
    pts[42] = [1000, 1000]  # excluded by the released slice 43:48
    pts[43:48] = [[10, 20], [11, 20], [12, 20], [13, 21], [14, 21.5]]  # mean (12, 20.5) → y rounds to even 20
    pts[36] = [-1000, -1000]
    pts[37:42] = [[30, 40]] * 5
    pts[48] = [5000, 5000]
    pts[49:68] = [[50.5, 60.5]] * 19  # halves round to even: 50, 60
    centres = feature_centres(pts)
    np.testing.assert_array_equal(centres, [[12, 20], [30, 40], [50, 60]])


def test_patch_placement_and_edges():
    height, width = 64, 48
    img = torch.rand(1, height, width, 3)
    box = (0, 0, 40, 48)  # hw = 5, hh = 6
    centres = np.array([[10, 20], [30, 20], [45, 60]])  # the mouth patch crosses the right and bottom edges
    local, glob = render_canvases(img, [box], [centres])
    expected = torch.zeros_like(img)
    expected[0, 14:26, 5:15] = img[0, 14:26, 5:15]
    expected[0, 14:26, 25:35] = img[0, 14:26, 25:35]
    expected[0, 54:64, 40:48] = img[0, 54:64, 40:48]
    torch.testing.assert_close(local, expected, rtol=0, atol=0)
    expected_global = torch.zeros_like(img)
    expected_global[0, 0:48, 0:40] = img[0, 0:48, 0:40]
    torch.testing.assert_close(glob, expected_global, rtol=0, atol=0)
    # A patch crossing the top edge: the release's slice wraps and comes out empty; ours keeps the visible part.
    top = np.array([[10, 2], [30, 20], [20, 40]])
    clip_local, _ = render_canvases(img, [box], [top], border="clip")
    release_local, _ = render_canvases(img, [box], [top], border="release")
    torch.testing.assert_close(clip_local[0, 0:8, 5:15], img[0, 0:8, 5:15], rtol=0, atol=0)
    assert release_local[0, :, 5:15].abs().sum() == 0  # rows -4:8 slice as 60:8, which is empty


def test_tiny_face_gives_tiny_or_no_patches():
    pts = np.random.default_rng(1).uniform([30, 30], [33, 33], size=(68, 2))  # a 3-pixel face
    box = face_box(pts, 64, 64)
    assert box[2] - box[0] <= 10 and box[3] - box[1] <= 12
    img = torch.rand(1, 64, 64, 3)
    local, glob = render_canvases(img, [box], [feature_centres(pts)])
    assert 0 < (glob[0].abs().sum(-1) > 0).sum() <= 120
    hw, hh = patch_half_size(box)
    assert (local[0].abs().sum(-1) > 0).sum() <= 3 * (2 * hw) * (2 * hh)


def test_stabilisation_test_includes_edges():
    assert bounds_inside((10.0, 10.0, 20.0, 20.0), (10, 10, 20, 20))
    assert not bounds_inside((9.9, 10.0, 20.0, 20.0), (10, 10, 20, 20))
    assert not bounds_inside((10.0, 10.0, 20.0, 20.5), (10, 10, 20, 20))


def test_condition_hint_layout():
    frames = torch.rand(2, 8, 16, 3)
    boxes = torch.tensor([[2, 1, 12, 7], [0, 0, 16, 8]])
    centres = torch.tensor([[[4, 3], [8, 3], [6, 5]], [[3, 2], [9, 2], [6, 6]]])
    cond = SFaceCondition(frames, 16, 8, boxes, centres, ("detected",) * 2, crop="center")
    hint = cond.hint()
    assert hint.shape == (2, 8, 16, 6) and cond.size == (16, 8) and cond.num_frames == 2 and cond.channels == 6
    local, glob = render_canvases(frames, [tuple(b) for b in boxes.tolist()], list(centres.numpy()))
    torch.testing.assert_close(hint[..., :3], local, rtol=0, atol=0)  # local first, then global, as released
    torch.testing.assert_close(hint[..., 3:], glob, rtol=0, atol=0)
    torch.testing.assert_close(cond.hint([1]), hint[1:])
    with pytest.raises(ValueError, match="2 driving frames but boxes"):
        SFaceCondition(frames, 16, 8, boxes[:1], centres, ("detected",) * 2)


def test_render_progress_is_reported_per_frame():
    calls = []
    render_canvases(
        torch.rand(3, 8, 8, 3), [(0, 0, 8, 8)] * 3, [np.zeros((3, 2), int)] * 3, progress=lambda *a: calls.append(a)
    )
    assert calls == [(1, 3), (2, 3), (3, 3)]


@pytest.mark.parametrize("border", ["diagonal"])
def test_unknown_border_is_an_error(border):
    with pytest.raises(ValueError, match="border"):
        render_canvases(torch.rand(1, 8, 8, 3), [(0, 0, 8, 8)], [np.zeros((3, 2), int)], border=border)


@pytest.mark.parametrize("border", ["clip", "release"])
def test_cutting_reports_the_box_bounding_what_it_wrote(border):
    """`cut_canvases` returns the box of every pixel it wrote (what a placed canvas resamples): the box of the
    canvases' non-black pixels when the frame has none, also for patches over the edges and the release's
    wrapped (empty) slices."""
    from xdyna_core.face.follow import lit_box

    frame = 0.1 + torch.rand(64, 48, 3, generator=torch.Generator().manual_seed(1))
    cases = [
        ((8, 10, 30, 40), np.array([[12, 20], [26, 20], [19, 34]])),  # inside
        ((0, 0, 40, 48), np.array([[10, 2], [30, 20], [45, 60]])),  # over the top, right and bottom edges
        ((20, 30, 20, 30), np.array([[20, 30], [20, 30], [20, 30]])),  # an empty box: nothing written
    ]
    for box, centres in cases:
        local, glob = torch.zeros(64, 48, 3), torch.zeros(64, 48, 3)
        written = cut_canvases(local, glob, frame, box, centres, border)
        assert written == lit_box(torch.cat([local, glob], -1)), (box, border)


@pytest.mark.parametrize("method", RESIZE_METHODS)
@pytest.mark.parametrize(
    ("size", "crop", "border"), [((90, 160), "top_biased", "clip"), ((50, 22), "center", "release")]
)
def test_a_condition_of_other_size_footage_cuts_what_the_fitted_clip_holds(method, size, crop, border):
    """Driving frames of another size: each frame's canvases are those cut from the whole fitted frame (fitting
    only the part they copy, to float32 rounding), for boxes and patches inside, at and over the edges."""
    frames = torch.rand(4, *size, 3, generator=torch.Generator().manual_seed(size[0]))
    width, height = 40, 32
    boxes = torch.tensor([[8, 6, 24, 22], [0, 0, 40, 32], [30, 20, 40, 32], [10, 10, 10, 10]])
    centres = torch.tensor(
        [[[12, 11], [20, 11], [16, 18]], [[1, 2], [38, 3], [20, 31]], [[33, 22], [39, 25], [36, 31]], [[10, 10]] * 3]
    )
    cond = SFaceCondition(
        frames, width, height, boxes, centres, ["detected"] * 4, crop=crop, resize=method, border=border
    )
    fitted, _ = fit_to_size(frames, width, height, anchor=crop, method=method)
    local, glob = render_canvases(fitted, boxes.tolist(), list(centres.numpy()), border)
    hint = cond.hint()
    torch.testing.assert_close(hint, torch.cat([local, glob], -1), rtol=0, atol=2e-6)
    assert hint[:3].abs().sum((1, 2, 3)).min() > 0 and not hint[3].any()  # three faces cut, the empty box gives none


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("placed", [False, True], ids=["where-driven", "placed"])
@pytest.mark.parametrize("ranges", ["clip", "none", "raised"])
def test_prepared_hints_normalise_the_lit_parts_as_the_whole_canvases_bit_for_bit(dtype, placed, ranges, monkeypatch):
    """What the S-Face ControlNet is fed (`prepared`: min-max normalised per stream, cast) is the release's
    normalisation of the whole canvases, bit for bit, though only the lit part of each frame is normalised
    (black stays black when each stream's clip minimum is 0); with a minimum above 0 the whole canvases are."""
    from xdyna_core.face.follow import IDENTITY

    frames = 0.05 + 0.9 * torch.rand(5, 32, 40, 3, generator=torch.Generator().manual_seed(7))
    boxes = torch.tensor([[8, 6, 24, 22], [0, 0, 40, 32], [30, 20, 40, 32], [10, 10, 10, 10], [2, 4, 20, 30]])
    centres = torch.tensor(
        [
            [[12, 11], [20, 11], [16, 18]],
            [[1, 2], [38, 3], [20, 31]],
            [[33, 22], [39, 25], [36, 31]],
            [[10, 10]] * 3,
            [[6, 10], [15, 10], [11, 22]],
        ]
    )
    rows = None
    if placed:  # kept, moved by whole pixels, scaled and turned, moved off the canvas, scaled down
        turn = 0.3 * np.array([np.cos(0.4), -np.sin(0.4), np.sin(0.4), np.cos(0.4)])
        rows = torch.from_numpy(
            np.stack([IDENTITY, [1, 0, 0, 1, -3, 5], [*(3 * turn), 4.5, -2.0], [1, 0, 0, 1, 0, 0], [1, 0, 0, 1, 60, 0]])
        )
    cond = SFaceCondition(frames, 40, 32, boxes, centres, ["detected"] * 5, placements=rows)
    whole = cond.hint().movedim(-1, 1)  # [k, 6, H, W] float32
    low = whole.amin((0, 2, 3)).reshape(2, 3).amin(1).repeat_interleave(3)
    high = whole.amax((0, 2, 3)).reshape(2, 3).amax(1).repeat_interleave(3)
    if ranges == "raised":
        low = low + 0.01
    given = None if ranges == "none" else (low, high)
    expected = whole if given is None else (whole - low.reshape(1, -1, 1, 1)) / (high - low).reshape(1, -1, 1, 1)
    whole_canvases = []
    monkeypatch.setattr(SFaceCondition, "_planar", lambda self, i, device: whole_canvases.append(i) or whole[i])
    index = [4, 0, 2, 1, 3, 0]
    out = cond.prepared(index, "cpu", dtype, given)
    assert out.dtype == dtype and out.shape == (6, 6, 32, 40)
    assert torch.equal(out, expected[index].to(dtype))
    assert bool(whole_canvases) == (ranges == "raised")  # the whole canvases only where black would not stay so
    if ranges != "raised":
        assert low.max() == 0  # the clip has black in both streams, as real footage has
