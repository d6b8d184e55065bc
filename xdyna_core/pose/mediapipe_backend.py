"""A pose backend that needs no download: MediaPipe Holistic, mapped to the POSE_KEYPOINT layout.

MediaPipe 0.10.x up to 0.10.21 ships the legacy "solutions" with their TFLite models inside the wheel
(`mediapipe/modules/...`): Holistic gives 33 BlazePose body landmarks, 21 landmarks per hand and the
468-point face mesh, on CPU, offline. Releases from 0.10.30 on dropped the solutions and their models.
Every release that has them pins `protobuf<5` (and from 0.10.15 `numpy<2`) although they run with newer
ones; ComfyUI environments usually hold newer ones that other packages need (onnx's generated code needs
protobuf ≥ 6), so install it without letting pip downgrade them:
`python -m pip install --no-deps mediapipe==0.10.21` and `python -m pip install absl-py flatbuffers matplotlib`.

The graph is run through `SolutionBase` without calculator-option overrides: Holistic's own constructor
edits calculator options with `FieldDescriptor.label`, which protobuf 7 removed, while the graph's default
detection and tracking thresholds (0.5) equal Holistic's defaults anyway.

Landmarks → our layout:
- body: OpenPose-18 from BlazePose-33 (`BLAZEPOSE_TO_BODY`), the neck as the mean of the shoulders (as
  DWPose does); a point is kept when its visibility reaches the threshold.
- hands: MediaPipe's 21-point hand layout is OpenPose's. Holistic's `left_hand_landmarks` is the person's
  own left hand (its wrist is the pose's left wrist), matching `hand_left_keypoints_2d`.
- face: the 468-point mesh → the 68 iBUG points by `FACE_MESH_TO_IBUG68` (one mesh index, or the mean of
  two), plus the body's right and left eye as points 68/69, as controlnet_aux writes DWPose faces.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterable, Sized

import numpy as np

from .keypoints import L_EYE, NECK, NUM_BODY, NUM_HAND, R_EYE, PersonPose, missing_points

logger = logging.getLogger("xdyna")

MEDIAPIPE_INSTALL_HINT = (
    "python -m pip install --no-deps mediapipe==0.10.21 && python -m pip install absl-py flatbuffers matplotlib"
)

# OpenPose-18 index → BlazePose-33 index (MediaPipe `PoseLandmark`); the neck (1) has none.
BLAZEPOSE_TO_BODY: tuple[int | None, ...] = (0, None, 12, 14, 16, 11, 13, 15, 24, 26, 28, 23, 25, 27, 5, 2, 8, 7)
BLAZEPOSE_SHOULDERS = (11, 12)
BLAZEPOSE_WRISTS = {"left_hand": 15, "right_hand": 16}

# iBUG-68 index → face-mesh indices (their mean). Correspondences after the Mediapipe_2_Dlib_Landmarks table
# (PeizhiYan), checked against MediaPipe's own FACEMESH_* region sets (tests/core/test_pose_mediapipe.py)
# and made mirror-symmetric: jaw point 13 is the mirror of point 3 (mesh 132↔361, 58↔288).
FACE_MESH_TO_IBUG68: tuple[tuple[int, ...], ...] = (
    # jaw 0–16, from the right temple (image left) over the chin to the left temple
    (127,), (234,), (93,), (132, 58), (58, 172), (136,), (150,), (176,), (152,),
    (400,), (379,), (365,), (397, 288), (361, 288), (323,), (454,), (356,),
    # right eyebrow 17–21, left eyebrow 22–26
    (70,), (63,), (105,), (66,), (107,), (336,), (296,), (334,), (293,), (300,),
    # nose bridge 27–30, nostrils 31–35
    (168, 6), (197, 195), (5,), (4,), (75,), (97,), (2,), (326,), (305,),
    # right eye 36–41, left eye 42–47 (outer corner first for the right eye, inner corner first for the left)
    (33,), (160,), (158,), (133,), (153,), (144,), (362,), (385,), (387,), (263,), (373,), (380,),
    # outer lips 48–59, inner lips 60–67
    (61,), (39,), (37,), (0,), (267,), (269,), (291,), (321,), (314,), (17,), (84,), (91,),
    (78,), (82,), (13,), (312,), (308,), (317,), (14,), (87,),
)  # fmt: skip


class MediaPipeUnavailableError(ImportError):
    """MediaPipe with its bundled legacy solutions cannot be imported."""


def load_holistic_module():
    """Import `mediapipe.python.solutions.holistic` and `solution_base`, or explain how to install them."""
    try:
        solution_base = importlib.import_module("mediapipe.python.solution_base")
        holistic = importlib.import_module("mediapipe.python.solutions.holistic")
    except ImportError as err:
        version = _installed_version()
        found = f"mediapipe {version} is installed but has" if version else "mediapipe is not installed, so there is"
        raise MediaPipeUnavailableError(
            f"{found} no bundled Holistic solution ({err}); the offline pose backend needs mediapipe 0.10.x "
            f"up to 0.10.21, whose wheel carries the models. Install it without downgrading numpy/protobuf: "
            f"{MEDIAPIPE_INSTALL_HINT}"
        ) from err
    return solution_base, holistic


def _installed_version() -> str | None:
    try:
        from importlib.metadata import PackageNotFoundError, version

        return version("mediapipe")
    except (ImportError, PackageNotFoundError):
        return None


def mediapipe_status() -> tuple[bool, str]:
    """Whether the backend can run here, and a sentence saying why not."""
    try:
        load_holistic_module()
    except MediaPipeUnavailableError as err:
        return False, str(err)
    return True, f"mediapipe {_installed_version()}"


def _landmark_array(landmarks, with_visibility: bool) -> np.ndarray | None:
    if landmarks is None:
        return None
    rows = [(lm.x, lm.y, lm.visibility if with_visibility else 1.0) for lm in landmarks.landmark]
    return np.asarray(rows, dtype=np.float64)


def person_from_landmarks(
    pose: np.ndarray | None,
    left_hand: np.ndarray | None,
    right_hand: np.ndarray | None,
    face: np.ndarray | None,
    width: int,
    height: int,
    min_visibility: float = 0.3,
) -> PersonPose | None:
    """MediaPipe Holistic landmarks (normalised image coordinates) as a `PersonPose` in pixels.

    Args:
        pose: `[33, 3]` (x, y, visibility), or None when no person was found (then None is returned).
        left_hand, right_hand: `[21, ≥2]` or None. face: `[468, ≥2]` (or 478 with irises) or None.
        min_visibility: body points below it are missing (MediaPipe still places occluded joints).
    """
    if pose is None:
        return None
    scale = np.array([width, height], dtype=np.float64)
    body = missing_points(NUM_BODY)
    for op_index, bp_index in enumerate(BLAZEPOSE_TO_BODY):
        if bp_index is not None and pose[bp_index, 2] >= min_visibility:
            body[op_index] = (*(pose[bp_index, :2] * scale), 1.0)
    left, right = BLAZEPOSE_SHOULDERS
    if min(pose[left, 2], pose[right, 2]) >= min_visibility:
        body[NECK] = (*(pose[[left, right], :2].mean(axis=0) * scale), 1.0)

    def hand(points: np.ndarray | None) -> np.ndarray | None:
        if points is None:
            return None
        if points.shape[0] != NUM_HAND:
            raise ValueError(f"a MediaPipe hand has {NUM_HAND} landmarks, got {points.shape[0]}")
        return np.concatenate([points[:, :2] * scale, np.ones((NUM_HAND, 1))], axis=1)

    face_points = None
    if face is not None:
        ibug = np.stack([face[list(indices), :2].mean(axis=0) for indices in FACE_MESH_TO_IBUG68]) * scale
        face_points = np.concatenate([np.concatenate([ibug, np.ones((68, 1))], axis=1), body[[R_EYE, L_EYE]]])
    return PersonPose(body, face_points, hand(left_hand), hand(right_hand))


class MediaPipeHolistic:
    """MediaPipe Holistic on RGB uint8 frames → one `PersonPose` (or None) per frame.

    Args:
        video: treat successive calls as a video (tracking between frames and MediaPipe's landmark
            smoothing); False runs every frame independently (for unrelated images).
        min_visibility: threshold on BlazePose's visibility for body points.
        face: also run the face mesh (needed for S-Face boxes; off saves time).

    Use as a context manager, or call `close()`: the MediaPipe graph holds native resources.
    """

    def __init__(self, video: bool = True, min_visibility: float = 0.3, face: bool = True):
        solution_base, holistic = load_holistic_module()
        self.min_visibility = min_visibility
        outputs = ["pose_landmarks", "left_hand_landmarks", "right_hand_landmarks"]
        if face:
            outputs.append("face_landmarks")
        # model_complexity 1 (pose_landmark_full.tflite) is the body model inside the wheel; 0 and 2 download.
        self._graph = solution_base.SolutionBase(
            binary_graph_path=holistic._BINARYPB_FILE_PATH,
            side_inputs={
                "model_complexity": 1,
                "smooth_landmarks": video,
                "enable_segmentation": False,
                "smooth_segmentation": False,
                "refine_face_landmarks": False,
                "use_prev_landmarks": video,
            },
            outputs=outputs,
        )
        self._outputs = outputs

    def __call__(self, image: np.ndarray) -> PersonPose | None:
        if image.ndim != 3 or image.shape[2] < 3:
            raise ValueError(f"expected an RGB image [H, W, 3], got shape {image.shape}")
        rgb = np.ascontiguousarray(image[:, :, :3], dtype=np.uint8)
        result = self._graph.process({"image": rgb})
        height, width = rgb.shape[:2]
        return person_from_landmarks(
            _landmark_array(result.pose_landmarks, True),
            _landmark_array(result.left_hand_landmarks, False),
            _landmark_array(result.right_hand_landmarks, False),
            _landmark_array(getattr(result, "face_landmarks", None), False),
            width,
            height,
            self.min_visibility,
        )

    def close(self) -> None:
        if self._graph is not None:
            self._graph.close()
            self._graph = None

    def __enter__(self) -> MediaPipeHolistic:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def detect_people(
    frames: Iterable[np.ndarray],
    video: bool = True,
    min_visibility: float = 0.3,
    face: bool = True,
    on_frame=None,
    total: int | None = None,
) -> list[PersonPose | None]:
    """Run Holistic over frames (`[H, W, 3]` uint8 RGB each, any iterable: a long clip need not be converted
    at once); `on_frame(done, total)` is called after each frame (`total` defaults to `len(frames)`)."""
    if total is None:
        total = len(frames) if isinstance(frames, Sized) else 0
    people: list[PersonPose | None] = []
    with MediaPipeHolistic(video=video, min_visibility=min_visibility, face=face) as holistic:
        for i, frame in enumerate(frames):
            people.append(holistic(frame))
            if on_frame is not None:
                on_frame(i + 1, max(total, i + 1))
    return people
