"""S-Face on real footage when the face landmarks are lost for a long stretch: the body keeps the patches on.

`driving_1.mp4` through MediaPipe (body and face), then the face landmarks of 110 consecutive frames are
removed from the POSE_KEYPOINT, as a masked or turned face loses them. The body's eye keypoints and the
removed landmarks are the ground truth the patches must cover.
"""

from __future__ import annotations

import av
import numpy as np
import pytest
import torch

from xdyna_core.face import sface_condition_from_pose
from xdyna_core.face.landmarks import FEATURE_SLICES
from xdyna_core.face.sface import patch_half_size
from xdyna_core.pose.keypoints import L_EYE, R_EYE, PoseFrame, frame_to_dict

RUN = range(270, 410)  # 140 consecutive frames (17.5 s at 8 fps) in which the dancer travels
HIDDEN = range(15, 125)  # 110 of them without face landmarks


@pytest.fixture(scope="module")
def footage(shared_data):
    pytest.importorskip("mediapipe.python.solutions", reason="mediapipe 0.10.x (≤ 0.10.21) not installed")
    from xdyna_core.pose.mediapipe_backend import detect_people

    with av.open(str(shared_data / "driving_1.mp4")) as video:
        frames = [f.to_ndarray(format="rgb24") for i, f in enumerate(video.decode(video=0)) if i in RUN]
    people = detect_people(frames, hand_gap=0)
    assert all(p is not None and p.face is not None for p in people), "MediaPipe lost the face in this run"
    return torch.from_numpy(np.stack(frames)).float() / 255.0, people


def on_patch(point, centre, half) -> bool:
    """Whether a pixel point lies in the patch `[c - h, c + h)` around `centre` (x, y) with `half` = (hw, hh)."""
    return all(centre[k] - half[k] <= point[k] < centre[k] + half[k] for k in range(2))


def test_a_face_hidden_for_110_frames_keeps_its_patches_on_the_eyes_and_mouth(footage):
    images, people = footage
    height, width = images.shape[1:3]
    truth = [p.face[:68, :2].copy() for p in people]
    pose = []
    for t, person in enumerate(people):
        person = person.copy()
        if t in HIDDEN:
            person.face = None
        pose.append(frame_to_dict(PoseFrame(width, height, [person])))
    ours = sface_condition_from_pose(images, pose, width, height)
    held = sface_condition_from_pose(images, pose, width, height, body_fallback=False)
    assert all(ours.status[t] == "body" for t in HIDDEN)
    misses = {"ours": 0, "held": 0}
    for name, cond in (("ours", ours), ("held", held)):
        for t in HIDDEN:
            centres = cond.centres[t].tolist()
            half = patch_half_size(cond.boxes[t].tolist())
            body = people[t].body
            features = [np.nanmean(truth[t][s], axis=0) for s in FEATURE_SLICES]
            hits = [
                on_patch(body[L_EYE, :2], centres[0], half),
                on_patch(body[R_EYE, :2], centres[1], half),
                *(on_patch(f, c, half) for f, c in zip(features, centres)),
            ]
            if name == "ours":
                assert all(hits), (t, hits, centres, body[[L_EYE, R_EYE], :2], features)
            misses[name] += not all(hits)
    assert misses["held"] >= 30, misses  # holding the last box loses the features as the head moves
    # the canvases show the frame's own pixels at the eyes: what the S-Face ControlNet is meant to see
    window = list(HIDDEN)[::20]
    local = ours.local_canvases(window)
    for k, t in enumerate(window):
        x, y = np.floor(people[t].body[L_EYE, :2]).astype(int)
        torch.testing.assert_close(local[k, y, x], images[t, y, x], rtol=0, atol=0)
