"""Pose retargeting: the driving motion on the reference person's body.

X-Dyna's authors say the driving skeleton must be aligned to the reference for good results but never
released the alignment; the released example pose videos are the driving poses as they are (after the
driving video was scaled and letterboxed to 512×896). Ours works on the OpenPose-18 tree rooted at the neck.

**Bone lengths, measured robustly.** A bone's length on one frame says little: a forearm pointing at the
camera is a fraction of its length. The driver's length of each bone is its 90th percentile over the clip
(`L_drv`), the length it has whenever the limb is across the view. The reference is one image, so a paired
limb takes the longer of its left and right (`L_ref`; the shorter one is the foreshortened one).

**Per frame, foreshortening is kept as the driver's ratio.** In frame t a bone of the driver with vector
`v(t)` gets the direction of `v(t)` and the length `L_target · min(1, |v(t)| / L_drv)`: at full length it
has the target length, foreshortened it is shortened in the driver's proportion, and it is never longer
than the target (a length above the clip's 90th percentile is detection noise, not a longer arm).

Modes (what each is for):

- `limbs`: the reference's proportions, size and place. Target lengths `L_ref`; the root moves as the
  driver's root, scaled by the global size ratio `s = Σ L_ref / Σ L_drv` (torso and limbs), with the anchor
  frame's neck on the reference's neck. For a reference whose body differs from the driver's.
- `proportions`: the reference's proportions at the driver's place and size. Target lengths `L_ref / s`,
  the root where the driver's is. The head stays where the driving video's face is, so the S-Face
  condition (cut from the driving frames) stays on it.
- `global`: one similarity transform (scale `s`, anchor neck on the reference neck): the driver's own
  proportions at the reference's size and place.
- `none`: the driving pose as is (only carried to the reference's canvas size). This reproduces the framing
  of the released examples.

With `driver_lengths="anchor"` the driver's lengths are those of the anchor frame and the per-frame ratio
is not capped: the behaviour of the first release, which stretches every limb that is foreshortened in the
anchor frame. Hands and face follow their attachment points (wrists, nose), scaled by the ratio of hand /
face sizes (the driver's hand size over the clip, 90th percentile; face size the clip's median), else by the
forearm / head factor. A joint whose parent is missing hangs from its nearest present ancestor, scaled by
the mean factor along the way; with no present ancestor it takes the global fit. Missing joints stay missing.
Keeping the result inside the canvas is `framing.keep_in_frame`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from .bounds import frame_inside
from .framing import keep_in_frame
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

RetargetMode = Literal["limbs", "proportions", "global", "none"]
RETARGET_MODES: tuple[str, ...] = ("limbs", "proportions", "global", "none")
DriverLengths = Literal["clip", "anchor"]
DRIVER_LENGTHS: tuple[str, ...] = ("clip", "anchor")

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


def reference_lengths(body: np.ndarray) -> np.ndarray:
    """The reference's bone lengths: each paired bone the longer of its two sides (the shorter is foreshortened
    in the image), a bone missing on one side its mirror's."""
    lengths = bone_lengths(body)
    mirrored = lengths[list(MIRROR)]
    with np.errstate(invalid="ignore"):
        return np.fmax(lengths, mirrored)


def clip_lengths(people: Sequence[PersonPose | None]) -> np.ndarray:
    """`[18]` each bone's 90th-percentile length over the frames that have it (NaN for bones never seen)."""
    rows = [bone_lengths(p.body) for p in people if p is not None]
    if not rows:
        return np.full(NUM_BODY, np.nan)
    table = np.stack(rows)
    out = np.full(NUM_BODY, np.nan)
    for bone in range(NUM_BODY):
        column = table[:, bone]
        column = column[np.isfinite(column)]
        if column.size:
            out[bone] = float(np.percentile(column, CLIP_PERCENTILE))
    return out


@dataclass
class RetargetPlan:
    """What `plan_retarget` measured; `apply` maps any driving frame's person onto the reference body."""

    scale: float  # global scale s
    ref_root: np.ndarray  # where the root goes at the anchor frame (the reference neck; the driver's for proportions)
    drv_root: np.ndarray  # driving neck at the anchor frame
    target_length: np.ndarray  # [18] length each bone has when the driver's is at full length (NaN: use k)
    driver_length: np.ndarray  # [18] the driver's full length of each bone
    hand_scale: dict[str, float] = field(default_factory=dict)
    face_scale: float = math.nan
    mode: str = "limbs"
    capped: bool = True  # per-frame ratio at most 1 (driver_lengths="clip")
    fit_scale: float = 1.0  # what `framing.keep_in_frame` applied to the whole clip afterwards
    fit_shift: np.ndarray = field(default_factory=lambda: np.zeros(2))

    @property
    def bone_scale(self) -> np.ndarray:
        """`[18]` factor `k_b` = target / driver length of each bone (s where unknown)."""
        k = self.target_length / self.driver_length
        return np.where(np.isfinite(k), k, self.part_factor)

    @property
    def part_factor(self) -> float:
        """How much the mode scales the driver as a whole (1 where the driver keeps its size)."""
        return 1.0 if self.mode in ("proportions", "none") else self.scale

    def global_fit(self, xy: np.ndarray) -> np.ndarray:
        if self.mode in ("proportions", "none"):
            return xy.copy()
        return self.ref_root + self.scale * (xy - self.drv_root)

    def _bone(self, joint: int, vector: np.ndarray) -> np.ndarray:
        """The output vector of the bone ending at `joint` for the driver's bone vector."""
        k = float(self.bone_scale[joint])
        if not self.capped:
            return k * vector
        length = float(np.hypot(*vector))
        full = float(self.driver_length[joint])
        if not math.isfinite(full) or full <= 0 or length <= full:
            return k * vector
        return k * vector * (full / length)  # never longer than the target length

    def apply(self, person: PersonPose) -> PersonPose:
        if self.mode == "none":
            return person.copy()
        if self.mode == "global":
            return person.map_points(self.global_fit)
        src = person.body
        ok = present(src)
        out = src.copy()
        placed = np.zeros(NUM_BODY, dtype=bool)
        for joint in BODY_ORDER:
            if not ok[joint]:
                continue
            # nearest present (and placed) ancestor; a bone spanning missing joints takes their mean factor
            ancestor, path = BODY_PARENT[joint], [joint]
            while ancestor is not None and not placed[ancestor]:
                path.append(ancestor)
                ancestor = BODY_PARENT[ancestor]
            if ancestor is None:
                out[joint, :2] = self.global_fit(src[joint, :2])
            elif len(path) == 1:
                out[joint, :2] = out[ancestor, :2] + self._bone(joint, src[joint, :2] - src[ancestor, :2])
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


def _anchor(driving: Sequence[PersonPose | None], anchor: int) -> int:
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
    return anchor


def plan_retarget(
    reference: PersonPose,
    driving: Sequence[PersonPose | None],
    anchor: int = 0,
    mode: RetargetMode = "limbs",
    driver_lengths: DriverLengths = "clip",
) -> RetargetPlan:
    """Measure the reference body against the driving sequence.

    Args:
        reference: the reference person (pixels of the reference canvas).
        driving: the driving person per frame (None where there is none).
        anchor: the driving frame whose neck is put on the reference's neck (`limbs`, `global`); when it has
            no person, the first frame with one is used. With `driver_lengths="anchor"` also the frame the
            driver's bones are measured on.
        mode: `limbs`, `proportions`, `global` or `none` (see the module notes).
        driver_lengths: `clip` (90th percentile over the clip, foreshortening kept as a ratio ≤ 1) or
            `anchor` (the anchor frame's lengths, ratio uncapped: the first release's behaviour).
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
    anchor = _anchor(driving, anchor)
    anchor_person = driving[anchor]
    assert anchor_person is not None
    drv_root = _root_of(anchor_person.body)

    ref_len = reference_lengths(reference.body)
    over_clip = _with_mirror(clip_lengths(driving))
    drv_len = _with_mirror(bone_lengths(anchor_person.body)) if driver_lengths == "anchor" else over_clip
    drv_len = np.where(np.isfinite(drv_len), drv_len, over_clip)  # a bone unseen at the anchor: the clip's

    common = [b for b in SIZE_BONES if math.isfinite(ref_len[b]) and math.isfinite(drv_len[b])]
    scale = _ratio(sum(ref_len[b] for b in common), sum(drv_len[b] for b in common)) if common else math.nan
    if not math.isfinite(scale):
        raise RetargetError(
            "the reference and driving poses share no measurable torso or limb bone; both need at least the "
            "shoulders or a limb"
        )
    in_place = mode in ("proportions", "none")
    size = scale if in_place else 1.0  # proportions: the reference's shape at the driver's size
    target = np.where(np.isfinite(ref_len) & np.isfinite(drv_len), ref_len / size, np.nan)

    hand_scale = {}
    ref_hands = {name: part_size(getattr(reference, name), HAND_EDGES) for name in ("left_hand", "right_hand")}
    k = target / drv_len
    k = np.where(np.isfinite(k), k, 1.0 if in_place else scale)
    for name, wrist_bone in (("left_hand", L_WRIST), ("right_hand", R_WRIST)):
        mirror = "right_hand" if name == "left_hand" else "left_hand"
        ref_size = ref_hands[name] if math.isfinite(ref_hands[name]) else ref_hands[mirror]
        drv_sizes = [part_size(getattr(p, name), HAND_EDGES) for p in driving if p is not None]
        drv_sizes = [s for s in drv_sizes if math.isfinite(s)]
        ratio = _ratio(ref_size, float(np.percentile(drv_sizes, CLIP_PERCENTILE))) if drv_sizes else math.nan
        hand_scale[name] = ratio / size if math.isfinite(ratio) else float(k[wrist_bone])
    ref_face = part_size(reference.face)
    faces = [part_size(p.face) for p in driving if p is not None]
    faces = [f for f in faces if math.isfinite(f)]
    drv_face = part_size(anchor_person.face) if driver_lengths == "anchor" else math.nan
    if not math.isfinite(drv_face):
        drv_face = float(np.median(faces)) if faces else math.nan
    face_scale = _ratio(ref_face, drv_face) / size
    if not math.isfinite(face_scale):
        face_scale = float(k[NOSE])
    root = drv_root if in_place else ref_root
    return RetargetPlan(
        scale, root, drv_root, target, drv_len, hand_scale, face_scale, mode, capped=driver_lengths == "clip"
    )


def retarget_frames(
    reference: PoseFrame,
    driving: Sequence[PoseFrame],
    anchor: int = 0,
    mode: RetargetMode = "limbs",
    driver_lengths: DriverLengths = "clip",
    reference_person: int = 0,
    driving_person: int = 0,
    keep_inside: bool = True,
) -> tuple[list[PoseFrame], RetargetPlan]:
    """Retarget one driving person per frame onto one reference person.

    With `keep_inside` (all modes but `none`) the clip is then shifted, and shrunk only if it must be, so that
    the joints the reference shows stay on the canvas (`framing.keep_in_frame`). Points still off the canvas
    are marked missing in every mode.

    The result lives on the reference's canvas and holds one person per frame where the driver had one (no
    one otherwise). The modes that keep the driver's place (`proportions`, `none`) first carry driving frames
    on a canvas of another size to the reference's (each axis scaled, as a renderer would); the others place
    the body by its bones. Returns the frames and the plan (scales measured), for logging and tests.
    """
    if reference_person >= len(reference.people):
        raise RetargetError(
            f"the reference pose has {len(reference.people)} people, so there is no person {reference_person}; "
            f"check the pose extracted from the reference image"
        )
    ref = reference.people[reference_person]
    size = (reference.width, reference.height)
    if mode in ("proportions", "none"):
        odd = [f for f in driving if (f.width, f.height) != size]
        if odd and abs(odd[0].width * size[1] - odd[0].height * size[0]) > 0.01 * odd[0].width * size[1]:
            logger.warning(
                "X-Dyna retarget: driving poses on a %dx%d canvas are stretched to the reference's %dx%d; crop "
                "both to the generation size first",
                odd[0].width,
                odd[0].height,
                *size,
            )
        driving = [f if (f.width, f.height) == size else f.resized(*size) for f in driving]
    people = [f.people[driving_person] if driving_person < len(f.people) else None for f in driving]
    people = [None if p is None or p.is_empty() else p for p in people]
    plan = plan_retarget(ref, people, anchor, mode, driver_lengths)
    frames = [
        PoseFrame(reference.width, reference.height, [] if person is None else [plan.apply(person)])
        for person in people
    ]
    if keep_inside and mode != "none":
        frames, plan.fit_scale, plan.fit_shift = keep_in_frame(frames, ref, plan.ref_root)
        if plan.fit_scale != 1.0 or plan.fit_shift.any():
            logger.info(
                "X-Dyna retarget: clip moved by (%.0f, %.0f) px and scaled by %.3f to stay in frame",
                *plan.fit_shift,
                plan.fit_scale,
            )
    return [frame_inside(frame) for frame in frames], plan
