"""A second look for hands MediaPipe Holistic missed: its hand solution on a crop around each wrist.

Holistic finds hands only through the body pose and drops those its landmark model is unsure of. Where a
hand is missing but the body pose has its wrist and elbow, the square `hands.hand_search_box` gives is cut
from the frame, resized to `CROP_SIZE` and given to MediaPipe Hands (palm detector + landmark model, the
models in the wheel), in still-image mode. A hand it finds is kept when its wrist lies within half a forearm
of the body's wrist and it is not the other hand found again (hands that cross share a crop).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from .hands import HANDS, forearm_length, hand_search_box
from .keypoints import NUM_HAND, PersonPose, present
from .mediapipe_runtime import load_holistic_module, quiet_import

CROP_SIZE = 256
MAX_WRIST_OFFSET = 0.5  # forearm lengths between the found hand's wrist and the body's wrist
SAME_HAND = 0.3  # a hand whose points lie this close (forearm lengths, mean) to the other hand is that hand


class HandCropDetector:
    """MediaPipe Hands on wrist crops. Use as a context manager, or call `close()`."""

    def __init__(self):
        solution_base, _ = load_holistic_module()
        hands = quiet_import("mediapipe.python.solutions.hands")
        self._graph = solution_base.SolutionBase(
            binary_graph_path=hands._BINARYPB_FILE_PATH,
            side_inputs={"model_complexity": 1, "num_hands": 2, "use_prev_landmarks": False},
            outputs=["multi_hand_landmarks"],
        )

    def find(self, image: np.ndarray, person: PersonPose, hand: str) -> np.ndarray | None:
        """`[21, 3]` pixel points of `person`'s `hand` ("left_hand"/"right_hand") in `image`, or None."""
        wrist_index, elbow_index = HANDS[hand]
        forearm = forearm_length(person.body, hand)
        if not math.isfinite(forearm):
            return None
        wrist = person.body[wrist_index, :2]
        left, top, side = hand_search_box(wrist, person.body[elbow_index, :2])
        zoom = CROP_SIZE / side
        warp = np.array([[zoom, 0.0, -left * zoom], [0.0, zoom, -top * zoom]])
        crop = cv2.warpAffine(np.ascontiguousarray(image[:, :, :3]), warp, (CROP_SIZE, CROP_SIZE))
        result = self._graph.process({"image": crop})
        other = getattr(person, "right_hand" if hand == "left_hand" else "left_hand")
        reach = max(forearm, 1.0)
        best, best_offset = None, MAX_WRIST_OFFSET
        for landmarks in result.multi_hand_landmarks or []:
            xy = np.array([(lm.x, lm.y) for lm in landmarks.landmark]) * side + (left, top)
            offset = float(np.hypot(*(xy[0] - wrist))) / reach
            if offset >= best_offset:
                continue
            if other is not None:
                both = present(other)
                if both.any() and np.hypot(*(xy[both] - other[both, :2]).T).mean() / reach < SAME_HAND:
                    continue
            best, best_offset = xy, offset
        if best is None:
            return None
        return np.concatenate([best, np.ones((NUM_HAND, 1))], axis=1)

    def complete(self, image: np.ndarray, person: PersonPose | None) -> tuple[PersonPose | None, int]:
        """The person with each missing hand looked for on a crop; returns the person and how many were found."""
        if person is None:
            return None, 0
        found = 0
        for hand in HANDS:
            if getattr(person, hand) is None:
                points = self.find(image, person, hand)
                if points is not None:
                    setattr(person, hand, points)
                    found += 1
        return person, found

    def close(self) -> None:
        if self._graph is not None:
            self._graph.close()
            self._graph = None

    def __enter__(self) -> HandCropDetector:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
