"""Pose retargeting: the driving motion on the reference person's body.

X-Dyna's authors say the driving skeleton must be aligned to the reference for good results but never
released the alignment. Ours works on the OpenPose-18 tree rooted at the neck:

- **Global fit.** A scale `s` = (sum of the reference's bone lengths) / (sum of the same bones in the
  driving pose's anchor frame), over the torso and limb bones present in both, and a translation that puts
  the driving neck of the anchor frame on the reference neck. The root then moves as the driver's root,
  scaled by `s`: `root'(t) = ref_root + s·(root(t) − root(anchor))`.
- **Per-limb lengths** (`mode="limbs"`). Every bone gets its own factor `k_b = L_ref(b) / L_drv(b)`, with the
  driver's length measured on the anchor frame (or the clip's 90th percentile, robust to a foreshortened
  anchor), and the skeleton is rebuilt from the root outward: `child' = parent' + k_b·(child − parent)`. So
  every bone keeps the driver's direction in every frame (the motion), and at the anchor frame it has the
  reference's length (the body); foreshortening over time is kept as a ratio. A bone missing on one side
  borrows its mirror bone (left ↔ right), else uses `s`.
- **Hands and face** follow their attachment points (wrists, nose), scaled by the ratio of hand / face sizes
  when both poses have one (the driver's hand size taken over the clip, 90th percentile, as hands turn),
  else by the forearm / head factor.
- A joint whose parent is missing hangs from its nearest present ancestor, scaled by the mean factor along
  the way; with no present ancestor it takes the global fit. Missing joints stay missing.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from .keypoints import (
    HAND_EDGES,
    L_ANKLE,
    L_WRIST,
    NECK,
    NOSE,
    NUM_BODY,
    R_ANKLE,
    R_WRIST,
    PersonPose,
    PoseFrame,
    present,
)

logger = logging.getLogger("xdyna")

RetargetMode = Literal["limbs", "global"]
RETARGET_MODES: tuple[str, ...] = ("limbs", "global")
DriverLengths = Literal["anchor", "clip"]
DRIVER_LENGTHS: tuple[str, ...] = ("anchor", "clip")

ROOT = NECK
# Parent of each OpenPose-18 joint in the tree rooted at the neck.
BODY_PARENT: tuple[int | None, ...] = (1, None, 1, 2, 3, 1, 5, 6, 1, 8, 9, 1, 11, 12, 0, 0, 14, 15)
MIRROR: tuple[int, ...] = (0, 1, 5, 6, 7, 2, 3, 4, 11, 12, 13, 8, 9, 10, 15, 14, 17, 16)
# Bones (named by their child joint) that measure body size for the global scale: torso and limbs.
SIZE_BONES: tuple[int, ...] = (2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13)
FOOT_KEY = "foot_keypoints_2d"  # ComfyUI SDPose's 6 foot points: left big toe, small toe, heel, then right
CLIP_PERCENTILE = 90.0


class RetargetError(ValueError):
    """The poses given cannot be retargeted (e.g. no person in the reference)."""


def _order_from_root() -> list[int]:
    order, frontier = [], [ROOT]
    while frontier:
        joint = frontier.pop(0)
        order.append(joint)
        frontier.extend(j for j, p in enumerate(BODY_PARENT) if p == joint)
    return order


BODY_ORDER: tuple[int, ...] = tuple(_order_from_root())


def bone_lengths(body: np.ndarray) -> np.ndarray:
    """`[18]` length of the bone ending at each joint (NaN for the root or when an end is missing)."""
    ok = present(body)
    lengths = np.full(NUM_BODY, np.nan)
    for child, parent in enumerate(BODY_PARENT):
        if parent is not None and ok[child] and ok[parent]:
            lengths[child] = float(np.hypot(*(body[child, :2] - body[parent, :2])))
    return lengths


def part_size(points: np.ndarray | None, edges: Sequence[tuple[int, int]] | None = None) -> float:
    """Size of a hand (mean length of its edges present) or face (RMS distance of its points to their centroid)."""
    if points is None:
        return math.nan
    ok = present(points)
    if edges is not None:
        lengths = [float(np.hypot(*(points[a, :2] - points[b, :2]))) for a, b in edges if ok[a] and ok[b]]
        return float(np.mean(lengths)) if len(lengths) >= 5 else math.nan
    xy = points[ok, :2]
    if len(xy) < 3:
        return math.nan
    return float(np.sqrt(((xy - xy.mean(axis=0)) ** 2).sum(axis=1).mean()))


def _ratio(num: float, den: float) -> float:
    return num / den if math.isfinite(num) and math.isfinite(den) and den > 1e-6 and num > 0 else math.nan


def _with_mirror(lengths: np.ndarray) -> np.ndarray:
    filled = lengths.copy()
    gaps = ~np.isfinite(filled)
    filled[gaps] = lengths[list(MIRROR)][gaps]
    return filled


@dataclass
class RetargetPlan:
    """What `plan_retarget` measured; `apply` maps any driving frame's person onto the reference body."""

    scale: float  # global scale s
    ref_root: np.ndarray  # reference neck (pixels of the reference canvas)
    drv_root: np.ndarray  # driving neck at the anchor frame
    bone_scale: np.ndarray  # [18] k_b per bone (by child joint); s where unknown
    hand_scale: dict[str, float] = field(default_factory=dict)
    face_scale: float = math.nan
    mode: str = "limbs"

    def global_fit(self, xy: np.ndarray) -> np.ndarray:
        return self.ref_root + self.scale * (xy - self.drv_root)

    def apply(self, person: PersonPose) -> PersonPose:
        if self.mode == "global":
            return person.map_points(self.global_fit)
        src = person.body
        ok = present(src)
        out = src.copy()
        placed = np.zeros(NUM_BODY, dtype=bool)
        for joint in BODY_ORDER:
            if not ok[joint]:
                continue
            # nearest present (and placed) ancestor, and the mean factor along the path
            ancestor, path = BODY_PARENT[joint], [joint]
            while ancestor is not None and not placed[ancestor]:
                path.append(ancestor)
                ancestor = BODY_PARENT[ancestor]
            if ancestor is None:
                out[joint, :2] = self.global_fit(src[joint, :2])
            else:
                k = float(np.mean([self.bone_scale[j] for j in path if BODY_PARENT[j] is not None]))
                out[joint, :2] = out[ancestor, :2] + k * (src[joint, :2] - src[ancestor, :2])
            placed[joint] = True

        def attach(points: np.ndarray | None, joint: int, k: float) -> np.ndarray | None:
            if points is None:
                return None
            moved = points.copy()
            if placed[joint] and math.isfinite(k):
                moved[:, :2] = out[joint, :2] + k * (points[:, :2] - src[joint, :2])
            else:
                moved[:, :2] = self.global_fit(points[:, :2])
            return moved

        left = attach(person.left_hand, L_WRIST, self.hand_scale.get("left_hand", math.nan))
        right = attach(person.right_hand, R_WRIST, self.hand_scale.get("right_hand", math.nan))
        face = attach(person.face, NOSE, self.face_scale)
        if face is not None and face.shape[0] >= 70:  # points 68/69 are the body's eyes (controlnet_aux)
            face[68:70] = out[[14, 15]]
        extra = {}
        for key, points in person.extra.items():
            if key == FOOT_KEY and points.shape[0] == 6:
                feet = points.copy()
                feet[:3] = attach(points[:3], L_ANKLE, self.bone_scale[L_ANKLE])
                feet[3:] = attach(points[3:], R_ANKLE, self.bone_scale[R_ANKLE])
                extra[key] = feet
            else:
                moved = points.copy()
                moved[:, :2] = self.global_fit(points[:, :2])
                extra[key] = moved
        return PersonPose(out, face, left, right, extra)


def _root_of(body: np.ndarray) -> np.ndarray | None:
    ok = present(body)
    if ok[NECK]:
        return body[NECK, :2].copy()
    if ok[2] and ok[5]:
        return body[[2, 5], :2].mean(axis=0)
    return None


def plan_retarget(
    reference: PersonPose,
    driving: Sequence[PersonPose | None],
    anchor: int = 0,
    mode: RetargetMode = "limbs",
    driver_lengths: DriverLengths = "anchor",
) -> RetargetPlan:
    """Measure the reference body against the driving sequence.

    Args:
        reference: the reference person (pixels of the reference canvas).
        driving: the driving person per frame (None where there is none).
        anchor: the driving frame whose pose is fitted onto the reference (global fit, and bone lengths with
            `driver_lengths="anchor"`); when it has no person, the first frame with one is used.
        mode: `limbs` (global fit + per-bone lengths) or `global` (one similarity transform, no per-limb change).
        driver_lengths: measure the driver's bones on the anchor frame, or over the whole clip
            (90th percentile of each bone's length: robust when a limb points at the camera at the anchor).
    """
    if mode not in RETARGET_MODES:
        raise ValueError(f"mode must be one of {RETARGET_MODES}, got {mode!r}")
    if driver_lengths not in DRIVER_LENGTHS:
        raise ValueError(f"driver_lengths must be one of {DRIVER_LENGTHS}, got {driver_lengths!r}")
    ref_root = _root_of(reference.body)
    if ref_root is None:
        raise RetargetError(
            "the reference pose has no neck or shoulders, so there is no body to fit the motion to; check the "
            "pose extracted from the reference image (one person, upper body visible)"
        )
    with_root = [i for i, p in enumerate(driving) if p is not None and _root_of(p.body) is not None]
    if not with_root:
        raise RetargetError("no driving frame has a person with a neck or shoulders; nothing to retarget")
    if not 0 <= anchor < len(driving):
        raise ValueError(f"anchor frame {anchor} is outside the driving clip of {len(driving)} frames")
    if anchor not in with_root:
        later = [i for i in with_root if i >= anchor]
        new_anchor = later[0] if later else with_root[-1]
        logger.warning("X-Dyna retarget: anchor frame %d has no person; using frame %d", anchor, new_anchor)
        anchor = new_anchor
    anchor_person = driving[anchor]
    assert anchor_person is not None
    drv_root = _root_of(anchor_person.body)

    ref_len = _with_mirror(bone_lengths(reference.body))
    anchor_len = bone_lengths(anchor_person.body)
    all_len = np.stack([bone_lengths(p.body) for p in driving if p is not None])
    with np.errstate(all="ignore"):
        clip_len = np.array(
            [np.nanpercentile(col, CLIP_PERCENTILE) if np.isfinite(col).any() else np.nan for col in all_len.T]
        )
    drv_len = anchor_len if driver_lengths == "anchor" else clip_len
    # a bone unseen at the anchor: its mirror there, else the clip's estimate
    drv_len = _with_mirror(drv_len)
    drv_len = np.where(np.isfinite(drv_len), drv_len, _with_mirror(clip_len))

    common = [b for b in SIZE_BONES if math.isfinite(ref_len[b]) and math.isfinite(drv_len[b])]
    scale = _ratio(sum(ref_len[b] for b in common), sum(drv_len[b] for b in common)) if common else math.nan
    if not math.isfinite(scale):
        raise RetargetError(
            "the reference and driving poses share no measurable torso or limb bone; both need at least the "
            "shoulders or a limb"
        )
    bone_scale = np.array([_ratio(ref_len[b], drv_len[b]) for b in range(NUM_BODY)])
    bone_scale = np.where(np.isfinite(bone_scale), bone_scale, scale)

    hand_scale = {}
    ref_hands = {name: part_size(getattr(reference, name), HAND_EDGES) for name in ("left_hand", "right_hand")}
    for name, wrist_bone in (("left_hand", L_WRIST), ("right_hand", R_WRIST)):
        mirror = "right_hand" if name == "left_hand" else "left_hand"
        ref_size = ref_hands[name] if math.isfinite(ref_hands[name]) else ref_hands[mirror]
        drv_sizes = [part_size(getattr(p, name), HAND_EDGES) for p in driving if p is not None]
        drv_sizes = [s for s in drv_sizes if math.isfinite(s)]
        ratio = _ratio(ref_size, float(np.percentile(drv_sizes, CLIP_PERCENTILE))) if drv_sizes else math.nan
        hand_scale[name] = ratio if math.isfinite(ratio) else float(bone_scale[wrist_bone])
    ref_face = part_size(reference.face)
    drv_face = part_size(anchor_person.face)
    if not math.isfinite(drv_face):
        faces = [part_size(p.face) for p in driving if p is not None]
        faces = [f for f in faces if math.isfinite(f)]
        drv_face = float(np.median(faces)) if faces else math.nan
    face_scale = _ratio(ref_face, drv_face)
    if not math.isfinite(face_scale):
        face_scale = float(bone_scale[NOSE])
    return RetargetPlan(scale, ref_root, drv_root, bone_scale, hand_scale, face_scale, mode)


def retarget_frames(
    reference: PoseFrame,
    driving: Sequence[PoseFrame],
    anchor: int = 0,
    mode: RetargetMode = "limbs",
    driver_lengths: DriverLengths = "anchor",
    reference_person: int = 0,
    driving_person: int = 0,
) -> tuple[list[PoseFrame], RetargetPlan]:
    """Retarget one driving person per frame onto one reference person.

    The result lives on the reference's canvas and holds one person per frame where the driver had one (no
    one otherwise). Returns the frames and the plan (scales measured), for logging and tests.
    """
    if reference_person >= len(reference.people):
        raise RetargetError(
            f"the reference pose has {len(reference.people)} people, so there is no person {reference_person}; "
            f"check the pose extracted from the reference image"
        )
    ref = reference.people[reference_person]
    people = [f.people[driving_person] if driving_person < len(f.people) else None for f in driving]
    people = [None if p is None or p.is_empty() else p for p in people]
    plan = plan_retarget(ref, people, anchor, mode, driver_lengths)
    frames = [
        PoseFrame(reference.width, reference.height, [] if person is None else [plan.apply(person)])
        for person in people
    ]
    return frames, plan
