"""API prompts the host tests run: X-Dyna on tiny weights, node by node as a user wires it."""

from __future__ import annotations

Link = tuple[str, int]


def link(value: Link) -> list:
    return [value[0], value[1]]


def tiny_xdyna_prompt(
    *,
    ckpt: str,
    ip_adapter: str,
    pose_controlnet: str,
    reference_image: Link,
    pose_images: Link,
    size: tuple[int, int],
    frames: int,
    seed: int = 7,
    model: Link = ("model", 0),
) -> dict:
    """Load Model → Load Reference (tiny VAE and CLIP vision) → Apply Dynamics-Adapter → Apply ControlNets (a pose
    ControlNet, released ranges) → Temporal Sampler (2 steps, DDIM, released windows), with tiny text
    conditioning. The caller adds the nodes behind `reference_image` and `pose_images`; `model` is the MODEL the
    Dynamics-Adapter patches (Load Model's, or a node in between); `size` is the reference's (width, height)."""
    width, height = size
    return {
        "model": {"class_type": "XDyna_LoadModel", "inputs": {"ckpt_name": ckpt, "precision": "fp32"}},
        "vae": {"class_type": "XDynaTest_TinyVAE", "inputs": {"seed": 1}},
        "clip_vision": {"class_type": "XDynaTest_TinyClipVision", "inputs": {"seed": 2}},
        "reference": {
            "class_type": "XDyna_LoadReference",
            "inputs": {
                "image": link(reference_image),
                "vae": ["vae", 0],
                "clip_vision": ["clip_vision", 0],
                "ip_adapter": ip_adapter,
                "width": width,
                "height": height,
                "crop": "center",
            },
        },
        "patched": {
            "class_type": "XDyna_ApplyDynamicsAdapter",
            "inputs": {"model": link(model), "xdyna": ["model", 1], "reference": ["reference", 0], "strength": 1.0},
        },
        "text": {"class_type": "XDynaTest_TinyConditioning", "inputs": {"seed": 3, "width": 32}},
        "pose_cn": {
            "class_type": "XDyna_LoadControlNet",
            "inputs": {"control_net_name": pose_controlnet, "precision": "fp32"},
        },
        "controls": {
            "class_type": "XDyna_ApplyControlNets",
            "inputs": {
                "positive": ["text", 0],
                "negative": ["text", 0],
                "pose_controlnet": ["pose_cn", 0],
                "pose_images": link(pose_images),
                "pose_strength": 1.0,
                "pose_start": 0.0,
                "pose_end": 1.0,
                "face_strength": 1.0,
                "face_start": 0.0,
                "face_end": 1.0,
                "normalize_hints": True,
            },
        },
        "sampler": {
            "class_type": "XDyna_TemporalSampler",
            "inputs": {
                "model": ["patched", 0],
                "positive": ["controls", 0],
                "negative": ["controls", 1],
                "reference": ["reference", 0],
                "frames": frames,
                "seed": seed,
                "steps": 2,
                "cfg": 7.5,
                "sampler_name": "ddim",
                "scheduler": "xdyna_ddim",
                "window_length": 16,
                "window_overlap": 4,
                "schedule": "uniform_closed_loop",
                "denoise": 1.0,
            },
        },
    }
