"""The plain-torch X-Dyna UNet3D oracle (tests/oracles/xdyna_unet3d.py) is itself right.

Its SD1.5 base, its IP-Adapter cross-attention and its AnimateDiff motion modules (placement included) are checked
against diffusers, an independent implementation; the Dynamics-Adapter and the joint GroupNorm have no diffusers
counterpart, so they are checked by the properties docs/xdyna_model.md §3 implies (what may and may not influence what).
"""

from __future__ import annotations

import warnings

import pytest
import torch

from tests.fixtures.official_layout import TINY_UNET, TINY_UNET_ALL_KEYS, UNetLayout, unet_key_groups
from tests.fixtures.weights import xdyna_unet_state_dict
from tests.oracles.xdyna_unet3d import sd15_unet2d, xdyna_unet3d

B, FRAMES, H, W = 2, 4, 8, 8  # two CFG branches, a 4-frame window, 8x8 latents (1x1 at the bottom level)
CTX = TINY_UNET.cross_attention_dim
ALL_OFF = {"adapter": False, "ip": False, "motion": False, "joint_group_norm": False}
COMPONENTS = ("adapter", "ip", "motion", "joint_group_norm")


def only(*names: str) -> dict[str, bool]:
    """Switch keywords with just the named components on."""
    return {**ALL_OFF, **dict.fromkeys(names, True)}


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def control_shapes(layout: UNetLayout, h: int, w: int) -> tuple[list[tuple[int, int, int]], tuple[int, int, int]]:
    """(C, h, w) of the 12 skip features (conv_in, then each down layer and downsampler) and of the mid block."""
    widths, n = layout.block_out_channels, len(layout.block_out_channels)
    down = [(widths[0], h, w)]
    for level, c in enumerate(widths):
        size = (h >> level, w >> level)
        down += [(c, *size)] * layout.layers_per_block
        if level < n - 1:
            down.append((c, h >> (level + 1), w >> (level + 1)))
    return down, (widths[-1], h >> (n - 1), w >> (n - 1))


def random_control(layout: UNetLayout, lead: tuple[int, ...], seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    down, mid = control_shapes(layout, H, W)
    return {
        "down": [0.3 * torch.randn(*lead, *s, generator=g) for s in down],
        "mid": 0.3 * torch.randn(*lead, *mid, generator=g),
    }


@pytest.fixture(scope="module")
def sd() -> dict[str, torch.Tensor]:
    return xdyna_unet_state_dict(TINY_UNET, seed=0)


@pytest.fixture(scope="module")
def inputs() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(123)
    return {
        "noisy": torch.randn(B, FRAMES, 4, H, W, generator=g),
        "reference": torch.randn(B, 4, H, W, generator=g),
        "timestep": torch.tensor([961, 501]),
        "text_context": torch.randn(B, 77, CTX, generator=g),
        "image_tokens": torch.randn(B, 16, CTX, generator=g),
    }


def run(sd, inputs, **kwargs) -> torch.Tensor:
    args = {**inputs, **{k: kwargs.pop(k) for k in list(kwargs) if k in inputs}}
    return xdyna_unet3d(sd, **args, **kwargs)


def changed(inputs: dict, **updates) -> dict:
    return {**inputs, **updates}


@pytest.fixture(scope="module")
def plain(sd, inputs) -> torch.Tensor:
    """The oracle with every X-Dyna component off."""
    return run(sd, inputs, **ALL_OFF)


# ------------------------------------------------------------------------------------------- against diffusers


def diffusers_unet(layout: UNetLayout, sd: dict[str, torch.Tensor]):
    diffusers = pytest.importorskip("diffusers")
    # For SD1.5-style configs diffusers' `attention_head_dim` is the number of heads (8), not the head width.
    model = diffusers.UNet2DConditionModel(
        sample_size=H,
        block_out_channels=layout.block_out_channels,
        layers_per_block=layout.layers_per_block,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=layout.cross_attention_dim,
        attention_head_dim=8,
    )
    unet_keys = unet_key_groups(layout)["unet"]
    model.load_state_dict({k: sd[k] for k in unet_keys}, strict=True)
    return model.eval()


@pytest.mark.parametrize("layout", [TINY_UNET, TINY_UNET_ALL_KEYS], ids=["tiny", "tiny_all_keys"])
def test_sd15_base_matches_diffusers(layout):
    sd = xdyna_unet_state_dict(layout, seed=1)
    model = diffusers_unet(layout, sd)
    g = torch.Generator().manual_seed(7)
    x = torch.randn(3, 4, H, W, generator=g)
    t = torch.tensor([1, 500, 961])
    ctx = torch.randn(3, 77, layout.cross_attention_dim, generator=g)
    control = random_control(layout, (3,), seed=8)
    with torch.no_grad():
        expected = model(x, t, ctx).sample
        expected_ctrl = model(
            x,
            t,
            ctx,
            down_block_additional_residuals=tuple(control["down"]),
            mid_block_additional_residual=control["mid"],
        ).sample
    assert max_diff(sd15_unet2d(sd, x, t, ctx), expected) <= 1e-4
    assert max_diff(sd15_unet2d(sd, x, t, ctx, control=control), expected_ctrl) <= 1e-4
    assert max_diff(expected, expected_ctrl) > 1e-2  # the residuals matter
    # a scalar timestep is shared by the batch
    with torch.no_grad():
        expected_scalar = model(x, 321, ctx).sample
    assert max_diff(sd15_unet2d(sd, x, 321, ctx), expected_scalar) <= 1e-4


def test_ip_adapter_matches_diffusers(sd, inputs):
    """IP only: each window frame is diffusers' SD1.5 UNet with IPAdapterAttnProcessor2_0 on every attn2 (text and
    image attentions share the query and are summed, scaled, before to_out) on the 77 + 16 token context."""
    pytest.importorskip("diffusers")
    from diffusers.models.attention_processor import AttnProcessor2_0, IPAdapterAttnProcessor2_0

    model = diffusers_unet(TINY_UNET, sd)
    scale = 0.7
    processors = {}
    for name in model.attn_processors:
        if not name.endswith("attn2.processor"):
            processors[name] = AttnProcessor2_0()
            continue
        attn2 = name.removesuffix(".processor")
        width = sd[f"{attn2}.to_q.weight"].shape[0]
        proc = IPAdapterAttnProcessor2_0(width, CTX, num_tokens=(16,), scale=scale)
        proc.to_k_ip[0].weight.data.copy_(sd[f"{attn2}.to_k_ip.weight"])
        proc.to_v_ip[0].weight.data.copy_(sd[f"{attn2}.to_v_ip.weight"])
        processors[name] = proc
    model.set_attn_processor(processors)

    x = inputs["noisy"].flatten(0, 1)
    t = inputs["timestep"].repeat_interleave(FRAMES)
    ctx = torch.cat([inputs["text_context"], inputs["image_tokens"]], dim=1).repeat_interleave(FRAMES, dim=0)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # diffusers deprecates splitting a 93-token tensor; it is what we want
        expected = model(x, t, ctx).sample.unflatten(0, (B, FRAMES))
    assert max_diff(run(sd, inputs, **only("ip"), ip_scale=scale), expected) <= 1e-4


class _PerFrameGroupNorm(torch.nn.Module):
    """GroupNorm of a [B, C, F, H, W] video with statistics per frame, as the official AnimateDiff-v1
    TemporalTransformer3DModel computes it (on "(b f) c h w"). diffusers' port normalises jointly over frames."""

    def __init__(self, norm: torch.nn.GroupNorm):
        super().__init__()
        self.norm = norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames = x.transpose(1, 2)  # [B, F, C, H, W]
        out = self.norm(frames.flatten(0, 1)).unflatten(0, frames.shape[:2])
        return out.transpose(1, 2)


def _diffusers_motion_key(key: str) -> str:
    """Official AnimateDiff-v1 motion-module key -> diffusers UNetMotionModel key."""
    key = key.replace(".temporal_transformer.", ".")
    key = key.replace(".attention_blocks.0.pos_encoder.pe", ".pos_embed.pe")
    for i in range(2):
        key = key.replace(f".attention_blocks.{i}.", f".attn{i + 1}.").replace(f".norms.{i}.", f".norm{i + 1}.")
    return key.replace(".ff_norm.", ".norm3.")


def test_motion_modules_match_diffusers_animatediff(sd, inputs):
    """Motion only: the window frames are diffusers' UNetMotionModel (AnimateDiff v1 layout: no mid-block module)
    on those F frames, which checks where the 20 motion modules sit and what they compute. Two adjustments to
    diffusers, both matching the official release: per-frame motion GroupNorm (see _PerFrameGroupNorm), and one
    position table per temporal transformer block (diffusers shares one between the two attentions; the official
    checkpoint stores two identical sinusoid buffers, so the oracle's copy here gets identical ones too)."""
    diffusers = pytest.importorskip("diffusers")
    sd = dict(sd)
    for key in [k for k in sd if k.endswith("attention_blocks.1.pos_encoder.pe")]:
        sd[key] = sd[key.replace("attention_blocks.1", "attention_blocks.0")]
    model = diffusers.UNetMotionModel(
        block_out_channels=TINY_UNET.block_out_channels,
        layers_per_block=TINY_UNET.layers_per_block,
        cross_attention_dim=CTX,
        num_attention_heads=8,
        motion_num_attention_heads=8,
        motion_max_seq_length=TINY_UNET.motion_pe_length,
        use_motion_mid_block=False,
    )
    groups = unet_key_groups(TINY_UNET)
    motion = [k for k in groups["motion"] if not k.endswith("attention_blocks.1.pos_encoder.pe")]
    state = {k: sd[k] for k in groups["unet"]} | {_diffusers_motion_key(k): sd[k] for k in motion}
    model.load_state_dict(state, strict=True)
    for name, module in model.named_modules():
        if name.endswith(tuple(f"motion_modules.{j}" for j in range(3))):
            module.norm = _PerFrameGroupNorm(module.norm)
    model.eval()

    sample = inputs["noisy"].transpose(1, 2)  # [B, C, F, H, W]
    context = inputs["text_context"].repeat_interleave(FRAMES, dim=0)  # UNetMotionModel wants it per frame
    with torch.no_grad():
        expected = model(sample, inputs["timestep"], context).sample.transpose(1, 2)
    got = run(sd, inputs, **only("motion"))
    assert max_diff(got, expected) <= 1e-4


# ------------------------------------------------------------------------------------- properties of the oracle


def test_all_off_is_per_frame_sd15(sd, inputs, plain):
    """Everything off: each window frame is SD1.5 on that frame alone; the reference has no influence."""
    x = inputs["noisy"].flatten(0, 1)
    t = inputs["timestep"].repeat_interleave(FRAMES)
    ctx = inputs["text_context"].repeat_interleave(FRAMES, dim=0)
    assert max_diff(plain, sd15_unet2d(sd, x, t, ctx).unflatten(0, (B, FRAMES))) <= 1e-5
    other_ref = changed(inputs, reference=torch.randn(B, 4, H, W))
    assert max_diff(run(sd, other_ref, **ALL_OFF), plain) <= 1e-6


def test_control_residuals_are_per_frame_sd15_control(sd, inputs):
    """ControlNet residuals reach the window frames as in SD1.5 (the reference's zero residual is invisible)."""
    control = random_control(TINY_UNET, (B, FRAMES), seed=3)
    got = run(sd, inputs, **ALL_OFF, control=control)
    flat = {"down": [r.flatten(0, 1) for r in control["down"]], "mid": control["mid"].flatten(0, 1)}
    x = inputs["noisy"].flatten(0, 1)
    t = inputs["timestep"].repeat_interleave(FRAMES)
    ctx = inputs["text_context"].repeat_interleave(FRAMES, dim=0)
    expected = sd15_unet2d(sd, x, t, ctx, control=flat).unflatten(0, (B, FRAMES))
    assert max_diff(got, expected) <= 1e-5


@pytest.mark.parametrize("component", COMPONENTS)
def test_each_component_changes_the_output(sd, inputs, plain, component):
    assert max_diff(run(sd, inputs, **only(component)), plain) > 1e-3


def test_zero_scales_equal_switched_off(sd, inputs, plain):
    on = {"adapter": True, "ip": True}
    assert max_diff(run(sd, inputs, **only(*on), adapter_scale=0.0, ip_scale=0.0), plain) <= 1e-6
    half = run(sd, inputs, **only("adapter"), adapter_scale=0.5)
    assert max_diff(half, plain) > 1e-3 and max_diff(half, run(sd, inputs, **only("adapter"))) > 1e-3


@pytest.mark.parametrize(
    ("components", "reference_matters"),
    [
        (("adapter",), True),
        (("joint_group_norm",), True),
        (("motion",), False),  # motion modules skip frame 0
        (("ip",), False),
        (("ip", "motion"), False),
    ],
)
def test_reference_influence(sd, inputs, components, reference_matters):
    other_ref = changed(inputs, reference=inputs["reference"] + torch.randn(B, 4, H, W))
    diff = max_diff(run(sd, inputs, **only(*components)), run(sd, other_ref, **only(*components)))
    assert diff > 1e-3 if reference_matters else diff <= 1e-6


def test_image_tokens_matter_only_with_ip(sd, inputs):
    other = changed(inputs, image_tokens=torch.randn(B, 16, CTX))
    assert max_diff(run(sd, inputs, **only("ip")), run(sd, other, **only("ip"))) > 1e-3
    assert max_diff(run(sd, inputs, **only("adapter", "motion")), run(sd, other, **only("adapter", "motion"))) == 0


def _with_frame_changed(inputs: dict, frame: int) -> dict:
    noisy = inputs["noisy"].clone()
    noisy[:, frame] += torch.randn(B, 4, H, W)
    return changed(inputs, noisy=noisy)


@pytest.mark.parametrize(
    ("components", "coupled"),
    [
        (("ip",), False),
        (("ip", "adapter"), False),  # frames only see the reference, never each other
        (("motion",), True),
        (("joint_group_norm",), True),
    ],
)
def test_frame_coupling(sd, inputs, components, coupled):
    """Changing window frame 3 changes frame 1's output only through the motion modules or the joint GroupNorm."""
    base = run(sd, inputs, **only(*components))
    other = run(sd, _with_frame_changed(inputs, 3), **only(*components))
    diff = max_diff(base[:, 1], other[:, 1])
    assert diff > 1e-3 if coupled else diff <= 1e-6
    assert max_diff(base[:, 3], other[:, 3]) > 1e-3


def test_cfg_branches_are_independent(sd, inputs):
    """Changing every input of branch 1 (and its control) leaves branch 0's output unchanged, all components on."""
    control = random_control(TINY_UNET, (B, FRAMES), seed=4)
    base = run(sd, inputs, control=control)
    other_inputs = {k: v.clone() for k, v in inputs.items()}
    other_inputs["noisy"][1] += 1.0
    other_inputs["reference"][1] -= 1.0
    other_inputs["timestep"][1] = 41
    other_inputs["text_context"][1] *= -1
    other_inputs["image_tokens"][1] += 0.5
    other_control = {"down": [r.clone() for r in control["down"]], "mid": control["mid"].clone()}
    for r in [*other_control["down"], other_control["mid"]]:
        r[1] += 0.2
    other = run(sd, other_inputs, control=other_control)
    assert max_diff(base[0], other[0]) <= 1e-5
    assert max_diff(base[1], other[1]) > 1e-3


@pytest.mark.parametrize("frames", [1, 5, 16])
def test_window_sizes(sd, frames):
    g = torch.Generator().manual_seed(frames)
    branches = 2 if frames < 16 else 1
    out = xdyna_unet3d(
        sd,
        torch.randn(branches, frames, 4, H, W, generator=g),
        torch.randn(branches, 4, H, W, generator=g),
        500,
        torch.randn(branches, 77, CTX, generator=g),
        torch.randn(branches, 16, CTX, generator=g),
    )
    assert out.shape == (branches, frames, 4, H, W)
    assert torch.isfinite(out).all()


def test_dtype_follows_input(sd, inputs):
    fp32 = run(sd, inputs)
    fp64 = run(sd, {k: v.double() if v.is_floating_point() else v for k, v in inputs.items()})
    assert fp32.dtype == torch.float32 and fp64.dtype == torch.float64
    assert max_diff(fp64.float(), fp32) <= 1e-4


def test_timestep_embedding_is_cos_first():
    """flip_sin_to_cos=True: at t = 0 the first half of the sinusoid features is cos(0) = 1, the second sin(0) = 0."""
    from tests.oracles.xdyna_unet3d import timestep_embedding

    emb = timestep_embedding(torch.tensor([0.0, 10.0]), 32)
    assert torch.equal(emb[0], torch.cat([torch.ones(16), torch.zeros(16)]))
    assert torch.allclose(emb[1, 1], torch.cos(torch.tensor(10.0 * 10000 ** (-1 / 16))))
