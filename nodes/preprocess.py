"""Image preparation nodes: fit reference images and driving frames to the generation size."""

from __future__ import annotations

from comfy_api.latest import io

from ..xdyna_core.image_prep import CROP_ANCHORS, RESIZE_METHODS, fit_to_size
from ..xdyna_core.validation import image_batch

CATEGORY = "X-Dyna/preprocess"
CROP_RESIZE = "X-Dyna Crop & Resize"
# SD1.5 latents are 1/8 of the image; the spec's default generation size is 512×896 (W×H).
SIZE_STEP = 8
DEFAULT_WIDTH, DEFAULT_HEIGHT = 512, 896
MAX_SIZE = 4096


def check_generation_size(width: int, height: int) -> None:
    for name, value in (("width", width), ("height", height)):
        if value % SIZE_STEP or not SIZE_STEP <= value <= MAX_SIZE:
            raise ValueError(
                f"{name} is {value}, but X-Dyna generates at sizes that are multiples of {SIZE_STEP} between "
                f"{SIZE_STEP} and {MAX_SIZE} (the SD1.5 latent is 1/8 of the image); use "
                f"{_nearest_sizes(value)} instead"
            )


def generation_size_inputs(width_tooltip: str, height_tooltip: str) -> list[io.Int.Input]:
    """The width and height widgets every node that works at the generation size shares."""
    return [
        io.Int.Input(name, default=default, min=SIZE_STEP, max=MAX_SIZE, step=SIZE_STEP, tooltip=tooltip)
        for name, default, tooltip in (
            ("width", DEFAULT_WIDTH, width_tooltip),
            ("height", DEFAULT_HEIGHT, height_tooltip),
        )
    ]


def _nearest_sizes(value: int) -> str:
    below = min(MAX_SIZE, max(SIZE_STEP, value // SIZE_STEP * SIZE_STEP))
    above = min(MAX_SIZE, below + SIZE_STEP)
    return str(below) if value <= SIZE_STEP or value >= MAX_SIZE or below == above else f"{below} or {above}"


class XDynaCropResize(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="XDyna_CropResize",
            display_name=CROP_RESIZE,
            category=CATEGORY,
            description=(
                "Crops images to the aspect of the generation size and resizes them to exactly width×height, "
                "as X-Dyna prepares its reference image (centred crop) and driving frames (top-biased crop)."
            ),
            inputs=[
                io.Image.Input("image", tooltip="Reference image or driving frames (any size)."),
                *generation_size_inputs(
                    "Generation width in pixels (multiple of 8). X-Dyna was trained at 512.",
                    "Generation height in pixels (multiple of 8). X-Dyna was trained at 896.",
                ),
                io.Combo.Input(
                    "crop",
                    options=list(CROP_ANCHORS),
                    default="center",
                    tooltip=(
                        "center: equal margins (how the official code prepares the reference). top_biased: "
                        "a quarter of the vertical surplus is cut above, three quarters below, keeping heads "
                        "in frame (how it prepares driving frames)."
                    ),
                ),
                io.Combo.Input(
                    "resize",
                    options=list(RESIZE_METHODS),
                    default="bilinear",
                    tooltip=(
                        "bilinear matches the official preprocessing (no antialiasing); area gives a cleaner "
                        "result when shrinking a large image."
                    ),
                ),
            ],
            outputs=[io.Image.Output(display_name="image")],
        )

    @classmethod
    def execute(cls, image, width: int, height: int, crop: str, resize: str) -> io.NodeOutput:
        check_generation_size(width, height)
        image = image_batch(image, CROP_RESIZE)
        fitted, _box = fit_to_size(image, width, height, anchor=crop, method=resize)
        return io.NodeOutput(fitted.contiguous())


NODES = [XDynaCropResize]
