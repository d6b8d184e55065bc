"""Checks of what a node was given, run once per node call (never inside the sampling loop).

Every node of the pack checks its inputs here before it does any work, so a bad input stops with one
sentence naming the node, the input, what was found and what to do, instead of a raw torch error deep in
the run or, worse, a video of NaN. What is unambiguous is converted rather than refused: uint8 images
(0–255), half-precision and float64 images, grayscale images, RGBA images without transparency, one image
without a batch dimension. Plain torch only; the checks that need ComfyUI's own classes live in
`xdyna_comfy.inputs`.

The finiteness and range checks cost one `torch.aminmax` pass over a tensor (NaN anywhere makes both ends
NaN, ±inf shows as an end), which allocates nothing; only when that pass finds a problem are the frames
that hold it located, for the message.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from .hints import HintFrames
from .pose.keypoints import PoseFormatError
from .reference import XDynaReference
from .seeds import SEED_MAX, torch_seed

logger = logging.getLogger("xdyna")

# Resampling (bicubic, Lanczos) overshoots [0, 1] a little; values this far outside are used as they are.
IMAGE_RANGE_SLACK = 0.1
# An alpha channel at least this opaque everywhere is dropped (uint8 255 and float 1.0 both pass).
OPAQUE_ALPHA = 1.0 - 0.5 / 255.0
LINK_HINT = "in an API prompt a link is written [node_id, output_index], not a value"


class XDynaInputError(ValueError):
    """A node input that cannot be used as given; the message names the node, the input, what was found and the fix."""


class XDynaInputTypeError(XDynaInputError, TypeError):
    """An input of the wrong kind altogether (a literal where a link belongs, a MODEL where an IMAGE does)."""


def input_error(node: str, name: str, found: str, fix: str, kind: type[XDynaInputError] = XDynaInputError):
    """`"<node>: the <name> input <found>; <fix>"`, the one shape of every input message."""
    return kind(f"{node}: the {name} input {found}; {fix}")


def describe(value: object) -> str:
    """A short description of a value that is not what an input expects (literals from API prompts, mostly)."""
    if isinstance(value, str):
        text = value if len(value) <= 40 else value[:37] + "..."
        return f"the text {text!r}"
    if isinstance(value, bool):
        return f"the boolean {value}"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if value is None:
        return "nothing (None)"
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {list(value.shape)}"
    return f"a {type(value).__name__}"


# --- linked inputs ---------------------------------------------------------------------------------------------


def require(value, kind: type | tuple[type, ...], node: str, name: str, expected: str, source: str):
    """`value` if it is an instance of `kind`; else an error saying what the input takes and where it comes from.

    Args:
        expected: what the input takes, in words ("an X-Dyna reference").
        source: the node output that provides it ("X-Dyna Load Reference's reference output").
    """
    if isinstance(value, kind):
        return value
    found = f"must be {expected}, but it is {describe(value)}"
    raise input_error(node, name, found, f"connect it to {source} ({LINK_HINT})", XDynaInputTypeError)


def require_reference(value, node: str, name: str = "reference") -> XDynaReference:
    return require(
        value, XDynaReference, node, name, "an X-Dyna reference", "the reference output of X-Dyna Load Reference"
    )


def _is_conditioning_entry(entry) -> bool:
    return (
        isinstance(entry, (list, tuple))
        and len(entry) == 2
        and isinstance(entry[0], torch.Tensor)
        and isinstance(entry[1], dict)
    )


def require_conditioning(value, node: str, name: str) -> list:
    """A CONDITIONING (a list of [embedding, options] pairs) whose embeddings are finite."""
    if not isinstance(value, list) or not value or not all(_is_conditioning_entry(c) for c in value):
        raise input_error(
            node,
            name,
            f"must be a CONDITIONING, but it is {describe(value)}",
            f"connect it to a CLIP Text Encode or X-Dyna Apply ControlNets output ({LINK_HINT})",
            XDynaInputTypeError,
        )
    for embedding, _ in value:
        if embedding.numel() and not _is_finite(*_ends(embedding)):
            raise input_error(
                node,
                name,
                "holds NaN or infinite values in its text embedding",
                "the text encoder overflowed or its weights are damaged: encode the prompt again with the CLIP "
                "of an SD1.5 checkpoint in fp32 (start ComfyUI with --fp32-text-enc)",
            )
    return value


# --- numbers ---------------------------------------------------------------------------------------------------


def finite_number(value, node: str, name: str, low: float | None = None, high: float | None = None) -> float:
    """A float widget's value: a finite number, within [low, high] when given."""
    span = f"from {low:g} to {high:g}" if low is not None and high is not None else "that is finite"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        found = f"must be a number, but it is {describe(value)}"
        raise input_error(node, name, found, f"give a number {span}", XDynaInputTypeError)
    number = float(value)
    if not math.isfinite(number):
        raise input_error(node, name, f"is {number}", f"give a number {span} (NaN and infinity are not settings)")
    if (low is not None and number < low) or (high is not None and number > high):
        raise input_error(node, name, f"is {number:g}", f"give a number {span}")
    return number


def percent_range(start: float, end: float, node: str, prefix: str) -> tuple[float, float]:
    """A ControlNet's (start, end) fractions of the sampling: both in [0, 1] and start not after end."""
    start = finite_number(start, node, f"{prefix}_start", 0.0, 1.0)
    end = finite_number(end, node, f"{prefix}_end", 0.0, 1.0)
    if start > end:
        raise input_error(
            node,
            f"{prefix}_start",
            f"is {start:g}, after {prefix}_end ({end:g}), so the ControlNet would never act",
            f"set {prefix}_start below {prefix}_end (0 and 1: the whole sampling)",
        )
    return start, end


# --- tensors ---------------------------------------------------------------------------------------------------


def _ends(x: torch.Tensor) -> tuple[float, float]:
    low, high = torch.aminmax(x.detach().float() if not x.is_floating_point() else x.detach())
    return float(low), float(high)


def _is_finite(low: float, high: float) -> bool:
    return math.isfinite(low) and math.isfinite(high)


def nonfinite_frames(x: torch.Tensor) -> list[int]:
    """Indices along the first dimension of the entries holding NaN or ±inf (one pass when there are none)."""
    if x.numel() == 0 or _is_finite(*_ends(x)):
        return []
    bad = ~torch.isfinite(x.detach()).reshape(x.shape[0], -1).all(dim=1)
    return bad.nonzero().flatten().tolist()


def _frames_text(frames: list[int], total: int) -> str:
    shown = ", ".join(str(i) for i in frames[:5])
    more = f" and {len(frames) - 5} more" if len(frames) > 5 else ""
    return f"frame{'s' if len(frames) > 1 else ''} {shown}{more} of {total}"


def require_finite(x: torch.Tensor, node: str, subject: str, fix: str) -> torch.Tensor:
    """`x` if it holds no NaN or ±inf anywhere; else an error naming the frames (first dimension) that do.

    Args:
        subject: what `x` is, as the message's subject ("the image input", "the sampled video").
    """
    frames = nonfinite_frames(x)
    if frames:
        kind = "NaN" if torch.isnan(x[frames[0]]).any() else "infinite values"
        where = f" in {_frames_text(frames, x.shape[0])}" if x.ndim > 1 and x.shape[0] > 1 else ""
        raise XDynaInputError(f"{node}: {subject} holds {kind}{where}; {fix}")
    return x


def seed_value(value, node: str, name: str = "seed") -> int:
    """A seed widget's value (0 to 2**64 - 1) as every seeded draw of the run reads it (`seeds.torch_seed`)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= SEED_MAX:
        raise input_error(node, name, f"is {describe(value)}", f"give a whole number from 0 to {SEED_MAX}")
    return torch_seed(value)


def _image_layout_error(x: torch.Tensor, node: str, name: str) -> XDynaInputError:
    shape = list(x.shape)
    fix = "give an IMAGE batch [frames, height, width, channels], as ComfyUI's image loaders output"
    if x.ndim == 3:
        found = f"is a 3-D tensor {shape}, not an IMAGE batch [frames, height, width, channels]"
        fix = "if it is a MASK convert it with Convert Mask to Image; if it is one image, add a batch dimension"
    elif x.ndim == 2:
        found = f"is a 2-D tensor {shape} (a single mask or grayscale picture?)"
        fix = "convert it to an IMAGE first (Convert Mask to Image)"
    elif x.ndim == 5:
        found = f"is a 5-D tensor {shape} (a batch of batches?)"
        fix = "flatten it into one batch of frames [frames, height, width, channels]"
    elif x.ndim == 4 and x.shape[-1] not in (1, 2, 3, 4) and x.shape[1] in (1, 3, 4):
        found = f"has shape {shape}, which looks channels-first [frames, channels, height, width]"
        fix = "ComfyUI IMAGEs are [frames, height, width, channels]: move the channels last (x.movedim(1, -1))"
    else:
        found = f"has shape {shape}"
    return input_error(node, name, found, fix)


def _as_float_image(x: torch.Tensor, node: str, name: str) -> torch.Tensor:
    if x.dtype == torch.float32:
        return x
    if x.dtype == torch.uint8:
        logger.info("%s: %s is uint8; read as 0-255 pixel values", node, name)
        return x.float().div_(255.0)
    if x.dtype == torch.bool or x.is_floating_point():
        return x.float()
    raise input_error(
        node,
        name,
        f"holds {x.dtype} values",
        "an IMAGE holds float32 values from 0 to 1 (uint8 0-255 is read too): convert it, e.g. x.float() / 255 "
        "for 0-255 values",
    )


def _to_channels(x: torch.Tensor, channels: int, node: str, name: str) -> torch.Tensor:
    found = x.shape[-1]
    if found == channels:
        return x
    if channels == 3 and found == 1:
        logger.info("%s: %s has one channel; used as a grayscale image", node, name)
        return x.expand(*x.shape[:-1], 3)
    if channels == 3 and found == 4:
        full = 255.0 if x.dtype == torch.uint8 else 1.0
        if float(x[..., 3].amin()) >= OPAQUE_ALPHA * full:
            return x[..., :3]  # RGBA that is opaque everywhere is just RGB
        raise input_error(
            node,
            name,
            "is an RGBA image with transparent pixels (its 4th channel, alpha, is below 1 somewhere)",
            "X-Dyna takes RGB: put it on a background first (core's Join Image with Alpha and Image Composite "
            "Masked), or load it with core's Load Image, which gives RGB and the alpha as a MASK",
        )
    what = "a grayscale image with alpha?" if found == 2 else "not an RGB image"
    raise input_error(
        node, name, f"has {found} channels per pixel ({what})", f"give an RGB IMAGE ({channels} channels per pixel)"
    )


def _check_image_range(x: torch.Tensor, low: float, high: float, node: str, name: str) -> None:
    if low >= -IMAGE_RANGE_SLACK and high <= 1.0 + IMAGE_RANGE_SLACK:
        return
    found = f"holds values from {low:.4g} to {high:.4g}, but an IMAGE holds 0 to 1"
    if high > 1.0 + IMAGE_RANGE_SLACK and low >= -IMAGE_RANGE_SLACK and high <= 255.0 + IMAGE_RANGE_SLACK:
        fix = "these look like 0-255 pixel values: divide them by 255"
    elif low < -IMAGE_RANGE_SLACK and low >= -1.0 - IMAGE_RANGE_SLACK and high <= 1.0 + IMAGE_RANGE_SLACK:
        fix = "these look like values in [-1, 1]: map them to [0, 1] with (x + 1) / 2"
    else:
        fix = "check the node that makes it (it should output a ComfyUI IMAGE)"
    raise input_error(node, name, found, fix)


def image_batch(
    value,
    node: str,
    name: str = "image",
    *,
    channels: int | None = 3,
    check_range: bool = True,
    to_float: bool = True,
) -> torch.Tensor:
    """An IMAGE input as a float32 `[frames, height, width, channels]` tensor, checked and converted once.

    Args:
        channels: the channels the node needs (3: RGB, converting grayscale and opaque RGBA); None keeps any
            count (ControlNet hints, whose channels are checked against the ControlNet).
        check_range: refuse values far outside [0, 1] (off for ControlNet hints, which are min-max normalised).
        to_float: convert uint8 and half-precision images to float32. Off for ControlNet hints, which are read
            a window at a time and converted then (a uint8 clip stays a quarter of the size).

    Returns the input itself when it needs no conversion.
    """
    x = require(value, torch.Tensor, node, name, "an IMAGE", "an IMAGE output (e.g. Load Image)")
    if x.ndim == 3 and x.shape[-1] == 3 and channels == 3:
        logger.info("%s: %s is one image without a batch dimension; used as a batch of 1", node, name)
        x = x.unsqueeze(0)
    if x.ndim != 4 or (channels is not None and x.shape[-1] > 4 and x.shape[1] in (1, 3, 4)):
        raise _image_layout_error(x, node, name)
    if x.shape[0] == 0:
        raise input_error(
            node, name, "is an empty batch (0 frames)", "check the node before it (a frame selection that took none?)"
        )
    if x.shape[1] == 0 or x.shape[2] == 0 or x.shape[3] == 0:
        raise input_error(node, name, f"has no pixels (shape {list(x.shape)})", "give images of at least 1x1 pixel")
    if to_float or not (x.is_floating_point() or x.dtype == torch.uint8):
        x = _as_float_image(x, node, name)
    if channels is not None:
        x = _to_channels(x, channels, node, name)
    if not x.is_floating_point():
        return x  # uint8: finite and within 0-255 by its type
    low, high = _ends(x)
    if not _is_finite(low, high):
        require_finite(
            x,
            node,
            f"the {name} input",
            "the node that made it produced invalid pixels: check it (a VAE decoding in fp16 can "
            "overflow; start ComfyUI with --fp32-vae)",
        )
    if check_range:
        _check_image_range(x, low, high, node, name)
    return x


def hint_frame_count(value, node: str, name: str) -> int:
    """The frame count of an input that gives one frame per video frame (an IMAGE batch or X-Dyna hint frames)."""
    if isinstance(value, HintFrames):
        return value.num_frames
    if isinstance(value, torch.Tensor) and value.ndim == 4:
        return value.shape[0]
    raise input_error(
        node,
        name,
        f"must be an IMAGE batch or X-Dyna pose frames, but it is {describe(value)}",
        f"connect it to X-Dyna Render Pose's pose_frames or an IMAGE batch ({LINK_HINT})",
        XDynaInputTypeError,
    )


# --- poses -----------------------------------------------------------------------------------------------------


@contextmanager
def reading_poses(node: str, name: str) -> Iterator[None]:
    """Inside it, an unreadable POSE_KEYPOINT value is reported as this node's input."""
    try:
        yield
    except PoseFormatError as err:
        raise PoseFormatError(
            f"{node}: the {name} input is not readable POSE_KEYPOINT ({err}); connect the POSE_KEYPOINT output of "
            "a pose node (X-Dyna DWPose Extractor, X-Dyna MediaPipe Pose) or give controlnet_aux-format JSON"
        ) from None
