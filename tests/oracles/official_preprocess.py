"""The official preprocessing (reference and driving-frame crops) re-stated with OpenCV, as released.

Written from the behaviour of `imread_resize_crop` and `crop2ratio` in the X-Dyna release (float
expressions and integer truncation included), not from this pack's code, so it can judge ours.
"""

from __future__ import annotations

import numpy as np


def _cv2():
    import cv2

    return cv2


def official_reference_crop(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """Centre crop to the target aspect, then cv2 bilinear resize to width×height."""
    h, w = img.shape[:2]
    if w / h > width / height:
        new_w = int(width / height * h)
        off = (w - new_w) // 2
        img = img[:, off : off + new_w]
    else:
        new_h = int(w / (width / height))
        off = (h - new_h) // 2
        img = img[off : off + new_h, :]
    return _cv2().resize(img, (width, height))


def official_driving_crop(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """Top-biased crop (a quarter of the vertical surplus above), then cv2 bilinear resize."""
    h, w = img.shape[:2]
    if w / h < width / height:
        tw, th = w, int(w / width * height)
    else:
        th, tw = h, int(h / height * width)
    sw, sh = (w - tw) // 2, (h - th) // 4
    return _cv2().resize(img[sh : sh + th, sw : sw + tw], (width, height))
