"""Pose extraction figures: DWPose frames per second, MediaPipe hand rates, memory per frame of the hints.

    python -m benchmarks.pose_extraction                      # tiny stand-in models, synthetic frames, CPU
    python -m benchmarks.pose_extraction --models-dir ~/ComfyUI/models/xdyna/dwpose --video ../shared/data/driving_1.mp4
    python -m benchmarks.pose_extraction --provider CUDAExecutionProvider --batch-size 16
    python -m benchmarks.pose_extraction --hands --video ../shared/data/driving_1.mp4 --frames 0   # 0 = all
    python -m benchmarks.pose_extraction --memory --frames 600

With `--models-dir` holding the released `yolox_l.onnx` and `dw-ll_ucoco_384.onnx` the figures are the real
ones; without it they measure our pre- and post-processing around tiny models (the overhead floor).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from xdyna_core.pose.dwpose import DETECTOR_FILE, ESTIMATOR_FILE, DWPose  # noqa: E402


def synthetic_frames(count: int, height: int, width: int) -> torch.Tensor:
    """Dark noise frames with a red and a blue patch (the tiny detector reports a person when it sees blue)."""
    g = torch.Generator().manual_seed(0)
    frames = torch.rand(count, height, width, 3, generator=g) * 0.2
    frames[:, height // 3 : height // 3 + 8, width // 2 : width // 2 + 8] = torch.tensor([1.0, 0.0, 0.0])
    frames[:, :8, :8] = torch.tensor([0.0, 0.0, 1.0])
    return frames


def video_frames(path: Path, count: int) -> torch.Tensor:
    import av

    frames = []
    with av.open(str(path)) as video:
        for frame in video.decode(video=0):
            frames.append(torch.from_numpy(frame.to_ndarray(format="rgb24")))
            if len(frames) == count:  # 0: every frame
                break
    return torch.stack(frames).float() / 255.0


def tiny_models(folder: Path) -> Path:
    from tests.fixtures.tiny_onnx import dwpose_folder

    return dwpose_folder(folder)


def hand_rates(video: Path, count: int) -> None:
    """Share of frames with each hand: MediaPipe's own settings, then each of ours added in turn."""
    from xdyna_core.pose.bounds import content_box
    from xdyna_core.pose.hands import hand_rates as rates
    from xdyna_core.pose.mediapipe_backend import MEDIAPIPE_HAND_PRESENCE, detect_people

    frames = video_frames(video, count)
    content = content_box(frames)
    uint8 = [(f * 255).round().to(torch.uint8).numpy() for f in frames]
    steps = [
        ("MediaPipe's own (presence 0.5)", dict(hand_presence=MEDIAPIPE_HAND_PRESENCE, hand_gap=0)),
        ("presence 0.05", dict(hand_gap=0)),
        ("+ gaps of up to 4 frames (default)", dict()),
        ("+ wrist crops", dict(hand_crops=True)),
    ]
    for label, options in steps:
        start = time.perf_counter()
        found = rates(detect_people(uint8, content=content, **options))
        seconds = (time.perf_counter() - start) / len(uint8)
        print(
            f"{label:36s} left {100 * found['left_hand']:5.1f} %  right {100 * found['right_hand']:5.1f} %  "
            f"({1000 * seconds:.0f} ms/frame, {len(uint8)} frames)"
        )


def hint_memory(count: int, width: int, height: int) -> None:
    """Bytes held per frame by the pose and S-Face hints, and the peak while a clip is streamed in windows."""
    from tests.core.test_hint_memory import dancer, peak_growth, stream
    from xdyna_core.face import sface_condition_from_pose
    from xdyna_core.pose.keypoints import PoseFrame, frame_to_dict
    from xdyna_core.pose.pose_frames import PoseHintFrames

    poses = [PoseFrame(width, height, [dancer(t)]) for t in range(count)]
    pose_hints = PoseHintFrames(poses, width, height)
    driving = torch.rand(1, height, width, 3).expand(count, -1, -1, -1)
    face = sface_condition_from_pose(driving, [frame_to_dict(p) for p in poses], width, height)
    as_images = width * height * 3 * 4
    for label, hints, channels in (("pose frames", pose_hints, 3), ("S-Face condition", face, 6)):
        start = time.perf_counter()
        growth = peak_growth(lambda h=hints: stream(h))
        seconds = (time.perf_counter() - start) / count
        print(
            f"{label:17s} {hints.held_bytes() / count:7.0f} B held per frame (as float32 images "
            f"{channels // 3 * as_images / 2**20:.1f} MB); streaming {count} frames in windows of 16: peak "
            f"+{growth / 2**20:.0f} MB, {1000 * seconds:.1f} ms/frame"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=16, help="frames to extract (default 16)")
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--height", type=int, default=896)
    parser.add_argument("--video", type=Path, help="decode frames from this video instead of synthesising them")
    parser.add_argument("--models-dir", type=Path, help=f"folder with {DETECTOR_FILE} and {ESTIMATOR_FILE}")
    parser.add_argument("--provider", default="auto", help="auto, cpu, or an onnxruntime provider name")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2, help="timed runs after one warm-up (best is reported)")
    parser.add_argument("--hands", action="store_true", help="MediaPipe hand detection rates on --video")
    parser.add_argument("--memory", action="store_true", help="memory per frame of the pose and S-Face hints")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.hands:
        if not args.video:
            parser.error("--hands needs --video")
        hand_rates(args.video, args.frames)
        return
    if args.memory:
        hint_memory(args.frames, args.width, args.height)
        return

    with tempfile.TemporaryDirectory() as tmp:
        models = args.models_dir or tiny_models(Path(tmp))
        kind = "released" if args.models_dir else "tiny stand-in"
        dwpose = DWPose.load(models / DETECTOR_FILE, models / ESTIMATOR_FILE, provider=args.provider)
        if args.video:
            frames = video_frames(args.video, args.frames)
        else:
            frames = synthetic_frames(args.frames, args.height, args.width)
        dwpose(frames[: min(2, len(frames))], batch_size=args.batch_size)  # warm-up: allocations, kernel choice
        best = float("inf")
        for _ in range(max(1, args.repeats)):
            start = time.perf_counter()
            people = dwpose(frames, batch_size=args.batch_size)
            best = min(best, time.perf_counter() - start)
        found = sum(1 for p in people if len(p))
        print(
            f"DWPose ({kind} models) on {dwpose.providers[DETECTOR_FILE][0]}: {len(frames)} frames of "
            f"{frames.shape[2]}x{frames.shape[1]}, batch {args.batch_size}: {len(frames) / best:.2f} frames/s "
            f"({1000 * best / len(frames):.1f} ms/frame, a person in {found} frames)"
        )


if __name__ == "__main__":
    main()
