"""onnxruntime sessions for the pose models: which execution provider runs them, and batching within a file's limits.

Released ONNX files differ in what they allow: some declare a dynamic batch dimension, others a fixed batch of
1. `OnnxModel.run` reads the declared input shape and splits (or pads) work to fit, so callers batch freely.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..file_kinds import git_lfs_pointer_message, git_lfs_pointer_size

logger = logging.getLogger("xdyna")

CPU_PROVIDER = "CPUExecutionProvider"
# Accelerators in order of preference. TensorRT is left out: it builds an engine for minutes on first use
# and again for every new input shape, which is the opposite of what a pose pre-pass wants.
ACCELERATED_PROVIDERS = (
    "CUDAExecutionProvider",
    "ROCMExecutionProvider",
    "MIGraphXExecutionProvider",
    "DmlExecutionProvider",
    "CoreMLExecutionProvider",
    "OpenVINOExecutionProvider",
)
# Providers that allocate on the GPU ComfyUI computes on (so room must be made for them there).
GPU_MEMORY_PROVIDERS = (
    "CUDAExecutionProvider",
    "ROCMExecutionProvider",
    "MIGraphXExecutionProvider",
    "DmlExecutionProvider",
)
PROVIDER_CHOICES = ("auto", "cpu")
_ORT_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(uint8)": np.uint8}


# onnxruntime's exception classes for a file it cannot parse (retrying on another provider cannot help)
_FILE_ERRORS = ("InvalidProtobuf", "InvalidGraph", "InvalidArgument", "NoSuchFile")
POSE_MODELS_HINT = "DWPose's yolox_l.onnx and dw-ll_ucoco_384.onnx from Hugging Face yzd-v/DWPose"


class OnnxFileError(ValueError):
    """An ONNX file onnxruntime cannot open: damaged, cut short, a Git LFS pointer, or not an ONNX model."""


def _unreadable(path: str | Path, error: BaseException) -> OnnxFileError:
    detail = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
    return OnnxFileError(
        f"{path}: onnxruntime cannot read this ONNX model ({type(error).__name__}: {detail}); the file is damaged "
        "or incomplete (cut short while downloading?) or not an ONNX model. Delete it and run the node again (the "
        f"released files, {POSE_MODELS_HINT}, are downloaded anew), or download it again yourself."
    )


class OnnxRuntimeMissingError(ImportError):
    """onnxruntime is not installed in the Python that runs the pack."""


def import_onnxruntime():
    try:
        import onnxruntime
    except ImportError as err:
        raise OnnxRuntimeMissingError(
            "DWPose runs on onnxruntime, which is not installed in this Python: install `onnxruntime-gpu` "
            "(NVIDIA GPUs) or `onnxruntime` (CPU, Apple, others) with `python -m pip install ...` from the "
            "environment that runs ComfyUI, then restart it"
        ) from err
    return onnxruntime


def available_providers() -> list[str]:
    """The execution providers this onnxruntime build offers ([] when onnxruntime is missing)."""
    try:
        return list(import_onnxruntime().get_available_providers())
    except OnnxRuntimeMissingError:
        return []


def choose_providers(preference: str = "auto", available: list[str] | None = None) -> list[str]:
    """Providers to ask a session for, best first, always ending with the CPU.

    Args:
        preference: `auto` (every available accelerator, then CPU), `cpu`, or a provider name such as
            `CUDAExecutionProvider`.
        available: the providers to choose from; defaults to what onnxruntime reports.
    """
    available = available_providers() if available is None else available
    if preference == "auto":
        return [p for p in ACCELERATED_PROVIDERS if p in available] + [CPU_PROVIDER]
    if preference == "cpu" or preference == CPU_PROVIDER:
        return [CPU_PROVIDER]
    if preference not in available:
        raise ValueError(
            f"onnxruntime provider {preference!r} is not available in this installation (available: "
            f"{', '.join(available) or 'none'}); choose auto or cpu, or install the onnxruntime build for it"
        )
    return [preference, CPU_PROVIDER]


def _provider_options(providers: list[str], device_id: int | None) -> list[dict[str, Any]]:
    options = []
    for provider in providers:
        opts: dict[str, Any] = {}
        if provider in ("CUDAExecutionProvider", "ROCMExecutionProvider", "MIGraphXExecutionProvider"):
            if device_id is not None:
                opts["device_id"] = device_id
            if provider == "CUDAExecutionProvider":
                # Grow the memory arena by what is asked, not by powers of two: the GPU is shared with ComfyUI.
                opts["arena_extend_strategy"] = "kSameAsRequested"
        options.append(opts)
    return options


@dataclass
class OnnxModel:
    """One ONNX file in an inference session, with the facts about its single image input.

    Attributes:
        session: the `onnxruntime.InferenceSession`.
        input_name: name of the image input (`images` for YOLOX, `input` for the DWPose estimator).
        input_shape: declared input shape, `None` for each dynamic dimension.
        input_dtype: numpy dtype the input must be fed as (float32, or float16 for half-precision exports).
        output_names: names of the outputs, in the file's order.
    """

    session: Any
    path: str
    input_name: str
    input_shape: tuple[int | None, ...]
    input_dtype: np.dtype
    output_names: tuple[str, ...]

    @classmethod
    def load(cls, path: str | Path, providers: list[str], device_id: int | None = None) -> OnnxModel:
        ort = import_onnxruntime()
        pointer = git_lfs_pointer_size(path)
        if pointer is not None:
            raise OnnxFileError(f"{path}: {git_lfs_pointer_message(path, pointer)}")
        options = ort.SessionOptions()
        options.log_severity_level = 3  # onnxruntime's own warnings (e.g. unused initializers) are noise here
        try:
            session = ort.InferenceSession(
                str(path),
                sess_options=options,
                providers=providers,
                provider_options=_provider_options(providers, device_id),
            )
        except Exception as err:  # a broken accelerator install must not stop the pre-pass: fall back to CPU
            if providers == [CPU_PROVIDER] or type(err).__name__ in _FILE_ERRORS:
                raise _unreadable(path, err) from None
            logger.warning(
                "X-Dyna: %s could not start on %s (%s); running it on the CPU", Path(path).name, providers, err
            )
            try:
                session = ort.InferenceSession(str(path), sess_options=options, providers=[CPU_PROVIDER])
            except Exception as cpu_err:
                raise _unreadable(path, cpu_err) from None
        return cls.from_session(session, str(path))

    @classmethod
    def from_session(cls, session: Any, path: str = "<memory>") -> OnnxModel:
        inputs = session.get_inputs()
        if len(inputs) != 1:
            raise OnnxFileError(
                f"{path}: expected an ONNX model with one image input, found {[i.name for i in inputs]}: this is "
                f"not one of the pose models; use {POSE_MODELS_HINT}"
            )
        (image,) = inputs
        if image.type not in _ORT_DTYPES:
            raise OnnxFileError(
                f"{path}: input {image.name!r} has type {image.type}, expected one of {sorted(_ORT_DTYPES)}; use "
                f"{POSE_MODELS_HINT}"
            )
        shape = tuple(d if isinstance(d, int) and d > 0 else None for d in image.shape)
        if len(shape) != 4:
            raise OnnxFileError(
                f"{path}: input {image.name!r} has shape {image.shape}, expected [batch, 3, height, width]; use "
                f"{POSE_MODELS_HINT}"
            )
        outputs = tuple(o.name for o in session.get_outputs())
        return cls(session, path, image.name, shape, np.dtype(_ORT_DTYPES[image.type]), outputs)

    @property
    def name(self) -> str:
        return Path(self.path).name

    @property
    def providers(self) -> list[str]:
        """The providers the session actually runs on (onnxruntime drops ones that failed to initialise)."""
        return list(self.session.get_providers())

    @property
    def fixed_batch(self) -> int | None:
        """The batch size the file requires, or None when its batch dimension is dynamic."""
        return self.input_shape[0]

    def spatial_size(self, default: tuple[int, int]) -> tuple[int, int]:
        """Input (width, height) declared by the file, or `default` where it is dynamic."""
        height, width = self.input_shape[2], self.input_shape[3]
        return (width or default[0], height or default[1])

    def run(self, x: np.ndarray, max_batch: int = 8) -> list[np.ndarray]:
        """Run the model on `x` ([N, C, H, W]) in batches the file accepts; outputs are concatenated along N."""
        n = x.shape[0]
        if n == 0:
            raise ValueError("run() needs at least one input")
        step = self.fixed_batch or max(1, max_batch)
        chunks: list[list[np.ndarray]] = []
        for start in range(0, n, step):
            part = x[start : start + step].astype(self.input_dtype, copy=False)
            count = part.shape[0]
            if self.fixed_batch and count < self.fixed_batch:  # a fixed batch > 1: pad, then drop the padding
                part = np.concatenate([part, np.repeat(part[-1:], self.fixed_batch - count, axis=0)])
            outs = self.session.run(list(self.output_names), {self.input_name: np.ascontiguousarray(part)})
            chunks.append([np.asarray(o[:count], dtype=np.float32) for o in outs])
        return [np.concatenate([c[i] for c in chunks]) for i in range(len(self.output_names))]
