"""Per-frame ControlNet hints of a whole clip, held compactly and handed out a window at a time.

A 600-frame clip of pose renderings at 512×896 is 3.3 GB as one float32 IMAGE, and the S-Face condition
twice that; the sampler only ever needs the frames of the window it evaluates. `HintFrames` is what the pose
and face stages hand to the ControlNets: something that knows the clip's size and gives any frames as float32
on request. Implementations keep a reference to frames that exist anyway, store uint8, or render each
requested frame from the little data it comes from (keypoints, face boxes), so the clip is never
materialised at float32 on the path from the preprocessing nodes to the sampler.

Layout is ComfyUI's IMAGE layout: `[frames, height, width, channels]`, values in [0, 1].
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch

# Frames per chunk when a whole clip is streamed (value ranges, previews): bounded memory, few calls.
STREAM_CHUNK = 16


Ranges = tuple[torch.Tensor, torch.Tensor]  # per-channel (low, high) of the min-max normalisation, [C] each


def normalise(hint: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """`[k, C, H, W]` hints min-max normalised per channel, `(hint - low) / (high - low)`; a channel with
    `high <= low` (constant over the clip) is left as it is. `hint` is written to in place: pass one you own."""
    low, high = (r.to(hint.device).reshape(1, -1, 1, 1) for r in (low, high))
    varies = high > low
    # x - 0 and x / 1 are exact, so constant channels keep their values without a second pass
    return hint.sub_(torch.where(varies, low, 0.0)).div_(torch.where(varies, high - low, 1.0))


def keeps_black(ranges: Ranges | None) -> bool:
    """Whether `normalise` by these ranges maps 0 to 0 in every channel (each one that varies starts at 0)."""
    if ranges is None:
        return True
    low, high = ranges
    return bool(((low == 0) | (high <= low)).all())


def as_index_list(index: Sequence[int] | torch.Tensor, num_frames: int) -> list[int]:
    """Frame indices as a list of ints, each checked to lie in the clip."""
    values = index.tolist() if isinstance(index, torch.Tensor) else [int(i) for i in index]
    bad = [i for i in values if not 0 <= i < num_frames]
    if bad:
        raise IndexError(f"hint frames {bad[:5]} lie outside a clip of {num_frames} frames")
    return values


class HintFrames(ABC):
    """A clip's hints, one image per frame, produced on demand.

    Subclasses implement `num_frames`, `height`, `width`, `channels` and `_frames`; everything else
    (index checks, value ranges, streaming) is shared.
    """

    _range: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    @abstractmethod
    def num_frames(self) -> int: ...

    @property
    @abstractmethod
    def height(self) -> int: ...

    @property
    @abstractmethod
    def width(self) -> int: ...

    @property
    @abstractmethod
    def channels(self) -> int: ...

    @abstractmethod
    def _frames(self, index: list[int]) -> torch.Tensor:
        """`[len(index), H, W, C]` float32 in [0, 1] on the CPU, for indices already checked."""

    def _planar(self, index: list[int], device: torch.device) -> torch.Tensor:
        """The values of `_frames` as a `[len(index), C, H, W]` float32 tensor of its own on `device`.

        This one renders on the CPU and moves; subclasses move less (uint8) or render on the device.
        """
        return self._frames(index).to(device).movedim(-1, 1)

    def _prepared(
        self, index: list[int], device: torch.device, dtype: torch.dtype, ranges: Ranges | None
    ) -> torch.Tensor:
        """The values of `prepared`; this one normalises the whole planar frames in place and casts them.
        Subclasses that know where their frames are black may do less."""
        hint = self._planar(index, device)
        if ranges is not None:
            hint = normalise(hint, *ranges)
        return hint.to(dtype)

    def __len__(self) -> int:
        return self.num_frames

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """`(frames, height, width, channels)`, as the IMAGE this stands for would have."""
        return (self.num_frames, self.height, self.width, self.channels)

    def frames(self, index: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """The hints of these frames (any order, repeats allowed): `[k, H, W, C]` float32 in [0, 1], CPU."""
        out = self._frames(as_index_list(index, self.num_frames))
        expected = (len(index), self.height, self.width, self.channels)
        if tuple(out.shape) != expected:
            raise RuntimeError(f"{type(self).__name__} gave frames of shape {tuple(out.shape)}, expected {expected}")
        return out

    def planar(self, index: Sequence[int] | torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
        """The hints of these frames as a ControlNet takes them: `[k, C, H, W]` float32 on `device`, the
        caller's own (it may write to it), with the values of `frames(index)`.

        What a sampler's ControlNets ask for every step: the frames travel to the compute device in the form
        they are held or drawn in (uint8 where they are uint8) and are converted there. Rendered kinds are
        drawn channel-planar (contiguous), which keeps the per-channel arithmetic that follows fast; tensors
        keep their own layout (on the CPU, transposing a 6-channel frame costs more than it saves).
        """
        device = torch.device(device)
        out = self._planar(as_index_list(index, self.num_frames), device)
        expected = (len(index), self.channels, self.height, self.width)
        if tuple(out.shape) != expected or out.dtype != torch.float32 or out.device.type != device.type:
            raise RuntimeError(
                f"{type(self).__name__} gave planar frames of shape {tuple(out.shape)} ({out.dtype} on "
                f"{out.device}), expected float32 {expected} on {device}"
            )
        return out

    def prepared(
        self,
        index: Sequence[int] | torch.Tensor,
        device: torch.device | str,
        dtype: torch.dtype,
        ranges: Ranges | None = None,
    ) -> torch.Tensor:
        """The hints of these frames as a ControlNet is fed them: `planar(index, device)` min-max normalised
        by `ranges` (`normalise`; None: as they are) and cast to `dtype`, `[k, C, H, W]`, the same values."""
        device = torch.device(device)
        out = self._prepared(as_index_list(index, self.num_frames), device, dtype, ranges)
        expected = (len(index), self.channels, self.height, self.width)
        if tuple(out.shape) != expected or out.dtype != dtype or out.device.type != device.type:
            raise RuntimeError(
                f"{type(self).__name__} gave prepared frames of shape {tuple(out.shape)} ({out.dtype} on "
                f"{out.device}), expected {dtype} {expected} on {device}"
            )
        return out

    def chunks(self, size: int = STREAM_CHUNK):
        """`(start, frames)` over the whole clip, `size` frames at a time."""
        for start in range(0, self.num_frames, size):
            yield start, self.frames(range(start, min(start + size, self.num_frames)))

    def value_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel `(min, max)` over every frame of the clip, float32 `[C]` each (computed once, streamed)."""
        if self._range is None:
            low = torch.full((self.channels,), float("inf"))
            high = torch.full((self.channels,), float("-inf"))
            for _, chunk in self.chunks():
                flat = chunk.reshape(-1, self.channels)
                low = torch.minimum(low, flat.amin(0))
                high = torch.maximum(high, flat.amax(0))
            self._range = (low, high)
        return self._range

    def to_image(self) -> torch.Tensor:
        """The whole clip as one float32 IMAGE `[N, H, W, C]`: for previews and tests, O(N) memory."""
        return self.frames(range(self.num_frames))


class TensorHintFrames(HintFrames):
    """Hints that already exist as a tensor: an IMAGE `[N, H, W, C]` (float) or uint8 frames, never copied whole.

    Args:
        images: the clip; float values are used as they are, uint8 values are divided by 255.
    """

    def __init__(self, images: torch.Tensor) -> None:
        if images.ndim != 4:
            raise ValueError(f"hint frames must be [frames, height, width, channels], got shape {tuple(images.shape)}")
        if images.dtype != torch.uint8 and not images.is_floating_point():
            raise ValueError(f"hint frames must be float or uint8, got {images.dtype}")
        self.images = images

    @property
    def num_frames(self) -> int:
        return self.images.shape[0]

    @property
    def height(self) -> int:
        return self.images.shape[1]

    @property
    def width(self) -> int:
        return self.images.shape[2]

    @property
    def channels(self) -> int:
        return self.images.shape[3]

    def _frames(self, index: list[int]) -> torch.Tensor:
        return self._converted(index, torch.device("cpu"))

    def _planar(self, index: list[int], device: torch.device) -> torch.Tensor:
        return self._converted(index, device).movedim(-1, 1)

    def _converted(self, index: list[int], device: torch.device) -> torch.Tensor:
        """`[k, H, W, C]` float32 on `device`: moved as held (uint8 stays uint8) and converted there; indexing
        copies, so the result is never the user's tensor."""
        picked = self.images[torch.tensor(index, dtype=torch.long, device=self.images.device)].to(device)
        return picked.float().div_(255.0) if picked.dtype == torch.uint8 else picked.float()


class LitHintFrames(HintFrames):
    """Hints that are black outside one rectangle of each frame (a face's canvases, a drawn skeleton), made
    there by `_lit`. Normalising keeps black black when each varying channel's clip minimum is 0, as it is
    wherever a frame has any black pixel, so `prepared` then normalises only each frame's lit part, in float32
    as the whole frame would be, and casts it into black frames made in the ControlNet's dtype: the same
    values, without a float32 window of whole frames to clear, normalise and cast.
    """

    @abstractmethod
    def _lit(self, i: int, device: torch.device) -> tuple[slice, slice, torch.Tensor] | None:
        """Where frame i can be non-black, and its values there: `(rows, cols, [h, w, C])` float32 on `device`,
        the caller's own; black everywhere else. None: black everywhere."""

    def _frames(self, index: list[int]) -> torch.Tensor:
        out = torch.zeros(len(index), self.height, self.width, self.channels)
        self._write_lit(index, out)
        return out

    def _planar(self, index: list[int], device: torch.device) -> torch.Tensor:
        # channel-planar frames seen as [k, H, W, C]
        out = torch.zeros(len(index), self.channels, self.height, self.width, device=device)
        self._write_lit(index, out.permute(0, 2, 3, 1))
        return out

    def _write_lit(self, index: list[int], out: torch.Tensor) -> None:
        """Write the indexed frames into the black `[k, H, W, C]` `out` (any layout or device), one at a time."""
        for k, i in enumerate(index):
            lit = self._lit(i, out.device)
            if lit is not None:
                rows, cols, values = lit
                out[k, rows, cols] = values

    def _prepared(
        self, index: list[int], device: torch.device, dtype: torch.dtype, ranges: Ranges | None
    ) -> torch.Tensor:
        if not keeps_black(ranges):
            return super()._prepared(index, device, dtype, ranges)
        out = torch.zeros(len(index), self.channels, self.height, self.width, device=device, dtype=dtype)
        for k, i in enumerate(index):
            lit = self._lit(i, device)
            if lit is not None:
                rows, cols, values = lit
                values = values.movedim(-1, 0).unsqueeze(0)
                out[k, :, rows, cols] = (values if ranges is None else normalise(values, *ranges))[0]
        return out


class ChannelStackHintFrames(HintFrames):
    """Several hint clips of one size side by side in channels (S-Face: `cat([local, global])`).

    Args:
        parts: clips with the same frame count, height and width.
    """

    def __init__(self, parts: Sequence[HintFrames]) -> None:
        if not parts:
            raise ValueError("no hint clips to stack")
        first = parts[0]
        for part in parts[1:]:
            if (part.num_frames, part.height, part.width) != (first.num_frames, first.height, first.width):
                raise ValueError(
                    f"hint clips to stack differ in size: {first.shape[:3]} and {part.shape[:3]} (frames, H, W)"
                )
        self.parts = list(parts)

    @property
    def num_frames(self) -> int:
        return self.parts[0].num_frames

    @property
    def height(self) -> int:
        return self.parts[0].height

    @property
    def width(self) -> int:
        return self.parts[0].width

    @property
    def channels(self) -> int:
        return sum(part.channels for part in self.parts)

    def _frames(self, index: list[int]) -> torch.Tensor:
        return torch.cat([part.frames(index) for part in self.parts], dim=-1)

    def _planar(self, index: list[int], device: torch.device) -> torch.Tensor:
        return torch.cat([part.planar(index, device) for part in self.parts], dim=1)


def as_hint_frames(value: HintFrames | torch.Tensor) -> HintFrames:
    """A `HintFrames` for either a `HintFrames` or an IMAGE-layout tensor (wrapped without copying)."""
    if isinstance(value, HintFrames):
        return value
    if isinstance(value, torch.Tensor):
        return TensorHintFrames(value)
    raise TypeError(f"expected hint frames or an IMAGE tensor, got a {type(value).__name__}")
