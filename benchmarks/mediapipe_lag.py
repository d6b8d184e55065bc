"""How far MediaPipe's video mode lags behind the frames: its landmark smoothing is causal.

Runs the pack's MediaPipe Holistic backend over a clip twice, in `video` mode (tracking and smoothing) and in
`images` mode (each frame on its own, no delay but jittery), and finds for the body joints, the nose, the
wrists and the 68 face landmarks the shift of the `images` track (in frames, interpolated) that best matches
the `video` track. Needs mediapipe 0.10.x (<= 0.10.21) and the example clip.

    python benchmarks/mediapipe_lag.py                      # ../shared/data/driving_1.mp4, every frame
    python benchmarks/mediapipe_lag.py --frames 48 VIDEO
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

GROUPS = {"body (joints 0-13)": ("body", list(range(14))), "nose": ("body", [0]), "wrists": ("body", [4, 7])}
SHIFTS = np.round(np.arange(-1.0, 3.0001, 0.05), 2)


def tracks(frames: list[np.ndarray], video: bool) -> dict[str, np.ndarray]:
    """`[T, J, 2]` pixel tracks of the body joints and the face landmarks (NaN where missing)."""
    from xdyna_core.pose.mediapipe_backend import detect_people

    people = detect_people(frames, video=video, face=True, hand_gap=0)
    body = np.full((len(people), 18, 2), np.nan)
    face = np.full((len(people), 68, 2), np.nan)
    for t, person in enumerate(people):
        if person is None:
            continue
        seen = person.body[:, 2] > 0
        body[t, seen] = person.body[seen, :2]
        if person.face is not None:
            face[t] = person.face[:68, :2]
    return {"body": body, "face": face}


def shifted(track: np.ndarray, shift: float) -> np.ndarray:
    """The track delayed by `shift` frames (linear interpolation over its present samples)."""
    t = np.arange(track.shape[0], dtype=np.float64)
    out = np.full_like(track, np.nan)
    for j in range(track.shape[1]):
        for c in range(2):
            ok = np.isfinite(track[:, j, c])
            if ok.sum() > 2:
                out[:, j, c] = np.interp(t - shift, t[ok], track[ok, j, c], left=np.nan, right=np.nan)
    return out


def mean_distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.nanmean(np.hypot(a[..., 0] - b[..., 0], a[..., 1] - b[..., 1])))


def lag(video: np.ndarray, images: np.ndarray) -> tuple[float, float, float]:
    """(best shift in frames, mean distance at it, mean distance unshifted) between the two tracks."""
    distances = [mean_distance(video, shifted(images, s)) for s in SHIFTS]
    best = int(np.nanargmin(distances))
    return float(SHIFTS[best]), distances[best], distances[int(np.flatnonzero(SHIFTS == 0)[0])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("video", nargs="?", default=str(REPO.parent / "shared" / "data" / "driving_1.mp4"))
    parser.add_argument("--frames", type=int, default=0, help="only the first N frames (0: all)")
    args = parser.parse_args()
    import av

    with av.open(args.video) as clip:
        rate = float(clip.streams.video[0].average_rate or 0)
        frames = []
        for frame in clip.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
            if len(frames) == args.frames:
                break
    video, images = tracks(frames, video=True), tracks(frames, video=False)
    print(f"MediaPipe video mode against images mode: {Path(args.video).name}, {len(frames)} frames at {rate:g} fps")
    print(f"{'points':>20} {'lag (frames)':>13} {'ms':>6} {'mean px at lag':>15} {'unshifted':>10}")
    groups = {**GROUPS, "face (68 landmarks)": ("face", list(range(68)))}
    for name, (kind, index) in groups.items():
        shift, at_lag, at_zero = lag(video[kind][:, index], images[kind][:, index])
        ms = 1000 * shift / rate if rate else float("nan")
        print(f"{name:>20} {shift:>13.2f} {ms:>6.0f} {at_lag:>15.2f} {at_zero:>10.2f}")


if __name__ == "__main__":
    main()
