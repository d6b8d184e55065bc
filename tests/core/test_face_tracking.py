"""S-Face boxes over time: the stabilisation rule, missed faces, smoothing."""

from __future__ import annotations

import numpy as np

from xdyna_core.face.sface import bounds_inside, expand_bounds, face_box, feature_centres, landmark_bounds
from xdyna_core.face.tracking import DETECTED, HELD, INTERPOLATED, NONE, gaussian_smooth, track_faces

W, H = 256, 320


def face_at(cx: float, cy: float, size: float, rng: np.random.Generator | None = None) -> np.ndarray:
    """A 68-point face: a fixed layout (unit square) scaled to `size` and centred at (cx, cy), with jitter."""
    layout = np.random.default_rng(123).uniform(-0.5, 0.5, size=(68, 2))
    layout[0], layout[1] = [-0.5, -0.5], [0.5, 0.5]  # bounds exactly the unit square
    pts = layout * size + [cx, cy]
    if rng is not None:
        pts = pts + rng.normal(0, 0.6, size=pts.shape)
    return pts


def intended_release_boxes(faces, width, height):
    """The release's loop as it was meant to run: each call gets the previous frame's box (docs/xdyna_model.md §5)."""
    last, out = None, []
    for pts in faces:
        bounds = landmark_bounds(pts)
        if last is not None and bounds_inside(bounds, last):
            box = last
        else:
            left, top, right, bottom = expand_bounds(bounds)
            box = (max(0, left), max(0, top), min(width, right), min(height, bottom))
        out.append(box)
        last = box
    return out


def test_without_stabilisation_and_smoothing_every_box_is_the_release_box():
    rng = np.random.default_rng(0)
    faces = [face_at(100 + 3 * i, 120 - 2 * i, 40 + i, rng) for i in range(12)]
    track = track_faces(faces, W, H, stabilize=False, smoothing=0)
    for i, pts in enumerate(faces):
        assert tuple(track.boxes[i]) == face_box(pts, W, H)
        np.testing.assert_array_equal(track.centres[i], feature_centres(pts))
    assert track.status == (DETECTED,) * 12


def test_stabilisation_keeps_the_box_while_the_face_stays_inside():
    rng = np.random.default_rng(1)
    # Small motion (the box is 2.7 L wide), then a shrinking face, then a jump far right, then a big face.
    centres = [(100, 150, 40)] * 3 + [(104, 147, 40), (96, 153, 38), (100, 150, 30), (180, 150, 40), (180, 150, 120)]
    faces = [face_at(cx, cy, s, rng) for cx, cy, s in centres]
    track = track_faces(faces, W, H, stabilize=True, smoothing=0)
    boxes = [tuple(b) for b in track.boxes]
    assert boxes == intended_release_boxes(faces, W, H)
    assert len(set(boxes[:6])) == 1  # held through jitter, small moves and the shrinking face
    assert boxes[6] != boxes[5] and boxes[7] != boxes[6]  # recomputed when the face leaves the box
    assert boxes[6] == face_box(faces[6], W, H)
    # Patch centres always follow the current landmarks, whatever box is kept.
    for i, pts in enumerate(faces):
        np.testing.assert_array_equal(track.centres[i], feature_centres(pts))


def test_short_gap_is_interpolated_and_long_gap_held():
    faces = [face_at(80 + 10 * i, 150, 40) for i in range(20)]
    seen = list(faces)
    for i in (5, 6, 7):  # a 3-frame gap
        seen[i] = None
    for i in range(10, 16):  # a 6-frame gap
        seen[i] = None
    track = track_faces(seen, W, H, stabilize=False, smoothing=0, max_gap=4)
    assert track.status[5:8] == (INTERPOLATED,) * 3 and track.status[10:16] == (HELD,) * 6
    a, b = face_box(faces[4], W, H), face_box(faces[8], W, H)
    for k, i in enumerate((5, 6, 7), start=1):
        expected = np.round((1 - k / 4) * np.array(a) + (k / 4) * np.array(b))
        np.testing.assert_array_equal(track.boxes[i], expected)
    for i in range(10, 16):
        np.testing.assert_array_equal(track.boxes[i], track.boxes[9])
        np.testing.assert_array_equal(track.centres[i], track.centres[9])
    assert tuple(track.boxes[16]) == face_box(faces[16], W, H)


def test_missing_at_the_start_and_end_takes_the_nearest_detection():
    faces = [face_at(120, 150, 40 + i) for i in range(10)]
    seen = [None, None, None] + faces[3:8] + [None, None]
    track = track_faces(seen, W, H, stabilize=False, smoothing=0)
    assert track.status == (HELD,) * 3 + (DETECTED,) * 5 + (HELD,) * 2
    for i in range(3):
        np.testing.assert_array_equal(track.boxes[i], track.boxes[3])
    np.testing.assert_array_equal(track.boxes[9], track.boxes[7])


def test_no_face_at_all():
    track = track_faces([None] * 5, W, H)
    assert not track.found and track.status == (NONE,) * 5
    assert not track.boxes.any()


def test_face_outside_the_frame_counts_as_missed():
    faces = [face_at(120, 150, 40), face_at(-300, 150, 40), face_at(124, 150, 40)]
    track = track_faces(faces, W, H, stabilize=False, smoothing=0)
    assert track.status == (DETECTED, INTERPOLATED, DETECTED)


def test_smoothing_reduces_jitter_without_lag_and_covers_the_face():
    rng = np.random.default_rng(2)
    path = [(120 + 40 * np.sin(i / 6), 150 + 10 * np.cos(i / 5), 40) for i in range(40)]
    faces = [face_at(cx, cy, s, rng) for cx, cy, s in path]
    raw = track_faces(faces, W, H, stabilize=False, smoothing=0)
    smooth = track_faces(faces, W, H, stabilize=False, smoothing=2.0)

    def jitter(boxes):
        return np.abs(np.diff(boxes.astype(float), n=2, axis=0)).mean()

    assert jitter(smooth.boxes) < 0.5 * jitter(raw.boxes)
    # Zero phase: no systematic lag behind the raw boxes.
    lag = (smooth.boxes.astype(float) - raw.boxes)[5:-5].mean(axis=0)
    assert np.abs(lag).max() < 1.0
    for i, pts in enumerate(faces):
        left, top, right, bottom = smooth.boxes[i]
        assert left <= pts[:, 0].min() and pts[:, 0].max() < right
        assert top <= pts[:, 1].min() and pts[:, 1].max() < bottom


def test_smoothing_keeps_constant_boxes_and_softens_stabilised_jumps():
    faces = [face_at(100, 150, 40)] * 10 + [face_at(200, 150, 40)] * 10
    track = track_faces(faces, W, H, stabilize=True, smoothing=1.5)
    lefts = track.boxes[:, 0].astype(float)
    assert lefts[0] == lefts[4] == face_box(faces[0], W, H)[0]
    assert lefts[-1] == face_box(faces[-1], W, H)[0]
    steps = np.diff(lefts)
    assert (steps >= 0).all() and np.count_nonzero(steps) >= 3  # the jump is spread over several frames
    for i, pts in enumerate(faces):
        assert track.boxes[i, 0] <= pts[:, 0].min() and pts[:, 0].max() < track.boxes[i, 2]


def test_gaussian_smooth_is_normalised():
    values = np.full((7, 3), 5.0)
    np.testing.assert_allclose(gaussian_smooth(values, 1.3), values)
    np.testing.assert_array_equal(gaussian_smooth(values, 0), values)


# --- the body fallback: faces placed from the head keypoints --------------------------------------------

HEAD_LAYOUT = np.array([[0.0, 0.05], [-0.18, -0.12], [0.18, -0.12], [-0.42, -0.05], [0.42, -0.05]])


def rigid_head_and_face(t: int) -> tuple[np.ndarray, np.ndarray]:
    """Frame t of a head that travels and grows: head keypoints and the face's 68 landmarks under the same
    transform (no turn: the landmarks' bounding box turns with a face only approximately)."""
    angle, scale = 0.0, 60.0 + 0.5 * t
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    offset = np.array([90.0 + 2.5 * t, 140.0 - 1.0 * t])
    layout = face_at(0.0, 0.0, 1.0)
    return HEAD_LAYOUT @ rot.T + offset, layout @ rot.T + offset


def test_faces_missed_for_a_long_stretch_are_placed_from_the_head_keypoints():
    frames = [rigid_head_and_face(t) for t in range(40)]
    heads = [h for h, _ in frames]
    truth = [f for _, f in frames]
    landmarks = [f if t < 5 or t >= 35 else None for t, f in enumerate(truth)]  # 30 frames hidden
    track = track_faces(landmarks, W, H, stabilize=False, smoothing=0, heads=heads)
    assert track.status[5:35] == ("body",) * 30 and track.status[:5] == (DETECTED,) * 5
    for t in range(5, 35):  # a rigid face: the model from the calibration frames places it exactly
        assert np.abs(track.boxes[t] - face_box(truth[t], W, H)).max() <= 1, t
        assert np.abs(track.centres[t] - feature_centres(truth[t])).max() <= 1, t
    held = track_faces(landmarks, W, H, stabilize=False, smoothing=0, max_gap=8)  # without heads: held
    assert held.status[5:35] == (HELD,) * 30
    assert np.abs(held.centres[34] - feature_centres(truth[34])).max() > 30


def test_the_landmark_to_body_difference_fades_into_the_run_from_both_ends():
    frames = [rigid_head_and_face(t) for t in range(60)]
    heads = [h.copy() for h, _ in frames]
    landmarks = [f if t < 10 or t >= 50 else None for t, (_, f) in enumerate(frames)]
    for t in range(50, 55):  # after the run the landmarks sit 6 px lower than the model (too few to teach it)
        landmarks[t] = landmarks[t] + (0.0, 6.0)
    track = track_faces(landmarks, W, H, stabilize=False, smoothing=0, heads=heads)
    truth = [feature_centres(f) for _, f in frames]
    offsets = np.array([(track.centres[t] - truth[t])[:, 1].mean() for t in range(10, 50)])
    assert offsets[-1] >= 4.0  # next to the frames with landmarks: close to their 6 px
    assert abs(offsets[len(offsets) // 2]) <= 1.0  # in the middle of the run: the body's estimate
    assert (np.diff(offsets[20:]) >= -0.5).all()  # rising steadily towards the end, no jump


def test_frames_without_head_keypoints_fall_back_to_interpolation():
    frames = [rigid_head_and_face(t) for t in range(20)]
    heads = [h for h, _ in frames]
    heads[9] = None
    heads[10] = np.full((5, 2), np.nan)
    heads[10][0] = frames[10][0][0]  # one point cannot place a face
    landmarks = [f if t in (0, 1, 2, 18, 19) else None for t, (_, f) in enumerate(frames)]
    track = track_faces(landmarks, W, H, stabilize=False, smoothing=0, max_gap=4, heads=heads)
    assert track.status[9] == INTERPOLATED and track.status[10] == INTERPOLATED
    assert track.status[8] == "body" and track.status[11] == "body"
    assert track_faces([None] * 3, W, H, heads=[frames[0][0]] * 3).status == (NONE,) * 3
