"""API prompts the host tests run: X-Dyna on tiny weights, node by node as a user wires it."""

from __future__ import annotations

Link = tuple[str, int]


def link(value: Link) -> list:
    return [value[0], value[1]]


def plain_node(class_type: str, **inputs) -> dict:
    """An API-prompt node with exactly these inputs."""
    return {"class_type": class_type, "inputs": inputs}


def model_nodes(
    n,
    *,
    ckpt: str,
    ip_adapter: str,
    pose_controlnet: str,
    reference_image: Link,
    size: tuple[int, int],
    model: Link = ("model", 0),
) -> dict:
    """The model side of a tiny X-Dyna graph: Load Model, Load Reference (tiny VAE and CLIP vision), Apply
    Dynamics-Adapter (patching `model`, Load Model's or a node in between), tiny text conditioning and a pose
    ControlNet. `n(class_type, **inputs)` makes a node; `size` is the reference's (width, height)."""
    width, height = size
    return {
        "model": n("XDyna_LoadModel", ckpt_name=ckpt, precision="fp32"),
        "vae": n("XDynaTest_TinyVAE", seed=1),
        "clip_vision": n("XDynaTest_TinyClipVision", seed=2),
        "reference": n(
            "XDyna_LoadReference",
            image=link(reference_image),
            vae=["vae", 0],
            clip_vision=["clip_vision", 0],
            ip_adapter=ip_adapter,
            width=width,
            height=height,
            crop="center",
        ),
        "patched": n(
            "XDyna_ApplyDynamicsAdapter",
            model=link(model),
            xdyna=["model", 1],
            reference=["reference", 0],
            strength=1.0,
        ),
        "text": n("XDynaTest_TinyConditioning", seed=3, width=32),
        "pose_cn": n("XDyna_LoadControlNet", control_net_name=pose_controlnet, precision="fp32"),
    }


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
    """`model_nodes` → Apply ControlNets (the pose ControlNet, released ranges) → Temporal Sampler (2 steps, DDIM,
    released windows), every input written out. The caller adds the nodes behind `reference_image` and
    `pose_images`."""
    return {
        **model_nodes(
            plain_node,
            ckpt=ckpt,
            ip_adapter=ip_adapter,
            pose_controlnet=pose_controlnet,
            reference_image=reference_image,
            size=size,
            model=model,
        ),
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


def tiny_workflow_nodes(
    n,
    *,
    reference_image: Link,
    pose_images: Link,
    size: tuple[int, int],
    seed: int,
    steps: int,
    fps: float,
    filename_prefix: str,
    face_condition: Link | None = None,
) -> dict:
    """A tiny X-Dyna workflow with widget defaults, from the reference and pose frames to a saved video:
    `model_nodes` (`tiny-xdyna`, `tiny-ip-plus`, `tiny-pose-cn`), Apply ControlNets (and `tiny-face-cn` on
    `face_condition` when given), Temporal Sampler, VAE Decode, Create Video, Save Video. `n(class_type, **inputs)` makes a node, filling in the widget defaults
    the front-end would; the caller adds the nodes behind the links."""
    face = {}
    nodes = model_nodes(
        n,
        ckpt="tiny-xdyna.safetensors",
        ip_adapter="tiny-ip-plus.bin",
        pose_controlnet="tiny-pose-cn.safetensors",
        reference_image=reference_image,
        size=size,
    )
    if face_condition is not None:
        nodes["face_cn"] = n("XDyna_LoadControlNet", control_net_name="tiny-face-cn.safetensors", precision="fp32")
        face = {"face_controlnet": ["face_cn", 0], "face_condition": link(face_condition)}
    nodes["controls"] = n(
        "XDyna_ApplyControlNets",
        positive=["text", 0],
        negative=["text", 0],
        pose_controlnet=["pose_cn", 0],
        pose_images=link(pose_images),
        **face,
    )
    nodes["sampler"] = n(
        "XDyna_TemporalSampler",
        model=["patched", 0],
        positive=["controls", 0],
        negative=["controls", 1],
        reference=["reference", 0],
        pose_images=link(pose_images),
        seed=seed,
        steps=steps,
    )
    nodes["decode"] = n("VAEDecode", samples=["sampler", 0], vae=["vae", 0])
    nodes["video"] = n("CreateVideo", images=["decode", 0], fps=fps)
    nodes["save"] = n("SaveVideo", video=["video", 0], filename_prefix=filename_prefix, format="mp4", codec="h264")
    return nodes
