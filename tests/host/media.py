"""Tiny stand-ins for the example inputs, where a test needs only a file of the right kind under a name."""

from __future__ import annotations

from pathlib import Path


def tiny_image(path: Path) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 112), (128, 128, 128)).save(path)
    return path


def tiny_video(path: Path, frames: int = 4) -> Path:
    import av
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width, stream.height, stream.pix_fmt = 64, 112, "yuv420p"
        for index in range(frames):
            image = np.full((112, 64, 3), 40 * index, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
