"""Memory per frame of the pose and S-Face hints of a 600-frame clip at 512×896.

As float32 images the clip's pose renderings would be 3.3 GB and its S-Face canvases 6.6 GB. The hint
frames hold keypoints and boxes (measured exactly), and rendering the clip a window at a time, as the sampler
asks for it, raises the process's peak resident memory by about one window (measured with the kernel's
high-water mark, reset before each measurement).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from xdyna_core.face import sface_condition_from_pose
from xdyna_core.pose.keypoints import PersonPose, PoseFrame, frame_to_dict, missing_points
from xdyna_core.pose.pose_frames import PoseHintFrames

FRAMES, W, H = 600, 512, 896
WINDOW = 16
FLOAT_FRAME = W * H * 3 * 4  # bytes of one float32 RGB frame: 5.5 MB
STATUS = Path("/proc/self/status")


def kib(field: str) -> int:
    for line in STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def peak_growth(run) -> int:
    """Bytes by which the peak resident set rises above the current one while `run()` runs."""
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current VmRSS (Linux ≥ 4.0)
    except OSError as err:
        pytest.skip(f"the peak resident memory cannot be reset here: {err}")
    before = kib("VmRSS")
    run()
    return (kib("VmHWM") - before) * 1024


def dancer(t: int) -> PersonPose:
    body = missing_points(18)
    xy = np.array([(256, 150), (256, 210), (216, 212), (196, 300), (186, 380), (296, 212), (316, 300),
                   (326, 380), (230, 420), (228, 560), (226, 700), (282, 420), (284, 560), (286, 700),
                   (248, 140), (264, 140), (238, 146), (274, 146)], dtype=np.float64)  # fmt: skip
    xy[:, 0] += 40 * np.sin(t / 20)
    body[:, :2], body[:, 2] = xy, 1.0
    hand = np.column_stack([xy[4, 0] + np.arange(21.0), xy[4, 1] + np.arange(21.0), np.ones(21)])
    face = np.column_stack([xy[0, 0] + np.linspace(-14, 14, 68), xy[0, 1] + np.linspace(-16, 18, 68), np.ones(68)])
    return PersonPose(body, face, hand, hand + (140.0, 0.0, 0.0))


def stream(hints) -> int:
    frames = 0
    for start in range(0, hints.num_frames, WINDOW):
        frames += hints.frames(range(start, min(start + WINDOW, hints.num_frames))).shape[0]
    return frames


def test_pose_frames_hold_keypoints_and_render_a_window_at_a_time():
    hints = PoseHintFrames([PoseFrame(W, H, [dancer(t)]) for t in range(FRAMES)], W, H)
    per_frame = hints.held_bytes() / FRAMES
    assert per_frame < 4096, per_frame  # 130 points × 3 float64: 3.1 kB, against 5.5 MB as an image
    growth = peak_growth(lambda: stream(hints))
    assert growth < 4 * WINDOW * FLOAT_FRAME, growth / 2**20  # about a window, never the clip (3.3 GB)
    print(f"pose frames: {per_frame:.0f} B held per frame; streaming {FRAMES} frames: +{growth / 2**20:.0f} MB peak")


def test_sface_condition_holds_boxes_and_renders_a_window_at_a_time():
    driving = torch.rand(1, H, W, 3).expand(FRAMES, -1, -1, -1)  # the clip the loader holds anyway (a view here)
    pose = [frame_to_dict(PoseFrame(W, H, [dancer(t)])) for t in range(FRAMES)]
    made = {}
    growth = peak_growth(lambda: made.setdefault("cond", sface_condition_from_pose(driving, pose, W, H)))
    condition = made["cond"]
    assert condition.driving is driving
    per_frame = condition.held_bytes() / FRAMES
    assert per_frame <= 80, per_frame  # a box and three centres, int64
    assert growth < 64 * 2**20, growth / 2**20  # tracking: no canvases are made
    growth = peak_growth(lambda: stream(condition))
    assert growth < 4 * WINDOW * 2 * FLOAT_FRAME, growth / 2**20  # about a window of 6-channel hints
    print(f"S-Face: {per_frame:.0f} B held per frame; streaming {FRAMES} frames: +{growth / 2**20:.0f} MB peak")
