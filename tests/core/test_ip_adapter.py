"""IP-Adapter-plus Resampler: released maths, released keys, sizes read from the weights, clear errors.

The reference below restates tencent-ailab/IP-Adapter's `ip_adapter/resampler.py` (the copy X-Dyna ships in
`animatediff/models/ip_adapter.py`) with explicit softmax and erf-GELU; it shares no code with `xdyna_core`.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tests.fixtures.official_layout import SD15_RESAMPLER, TINY_RESAMPLER, TINY_UNET, image_proj_key_shapes
from tests.fixtures.weights import ip_adapter_plus_state_dict, save_bin, save_safetensors
from xdyna_core.checkpoints import XDynaCheckpointError
from xdyna_core.ip_adapter import IPAdapterFormatError, Resampler, load_ip_adapter_plus

DIM_HEAD = TINY_RESAMPLER.dim_head  # 8


@pytest.fixture(scope="module")
def bundle() -> dict[str, dict[str, torch.Tensor]]:
    return ip_adapter_plus_state_dict(TINY_UNET, seed=0)


def reference_resampler(sd: dict[str, torch.Tensor], x: torch.Tensor, dim_head: int) -> torch.Tensor:
    def ln(t, name):
        return F.layer_norm(t, t.shape[-1:], sd[f"{name}.weight"], sd[f"{name}.bias"], eps=1e-5)

    def heads(t, n):
        return t.reshape(t.shape[0], t.shape[1], n, -1).permute(0, 2, 1, 3)

    depth = len({k.split(".")[1] for k in sd if k.startswith("layers.")})
    latents = sd["latents"].repeat(x.shape[0], 1, 1)
    x = x @ sd["proj_in.weight"].T + sd["proj_in.bias"]
    for i in range(depth):
        a = f"layers.{i}.0"
        n_heads = sd[f"{a}.to_q.weight"].shape[0] // dim_head
        feats, lat = ln(x, f"{a}.norm1"), ln(latents, f"{a}.norm2")
        q = heads(lat @ sd[f"{a}.to_q.weight"].T, n_heads)
        kv = torch.cat([feats, lat], dim=1) @ sd[f"{a}.to_kv.weight"].T
        inner = kv.shape[-1] // 2
        k, v = heads(kv[..., :inner], n_heads), heads(kv[..., inner:], n_heads)
        scores = torch.einsum("bhqd,bhkd->bhqk", q, k) / math.sqrt(dim_head)
        w = scores.exp() / scores.exp().sum(-1, keepdim=True)
        out = torch.einsum("bhqk,bhkd->bhqd", w, v).permute(0, 2, 1, 3).reshape(lat.shape[0], lat.shape[1], -1)
        latents = latents + out @ sd[f"{a}.to_out.weight"].T
        f = f"layers.{i}.1"
        hidden = ln(latents, f"{f}.0") @ sd[f"{f}.1.weight"].T
        hidden = 0.5 * hidden * (1 + torch.erf(hidden / math.sqrt(2)))
        latents = latents + hidden @ sd[f"{f}.3.weight"].T
    return ln(latents @ sd["proj_out.weight"].T + sd["proj_out.bias"], "norm_out")


def test_matches_released_maths(bundle):
    sd = bundle["image_proj"]
    resampler = Resampler.from_state_dict(sd, dim_head=DIM_HEAD)
    x = torch.randn(2, 257, TINY_RESAMPLER.embedding_dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = resampler(x)
    assert out.shape == (2, 16, TINY_UNET.cross_attention_dim)
    torch.testing.assert_close(out, reference_resampler(sd, x, DIM_HEAD), atol=1e-5, rtol=1e-5)
    # Batch items are independent; every item sees the same learnt queries.
    with torch.no_grad():
        torch.testing.assert_close(resampler(x[1:]), out[1:], atol=1e-6, rtol=1e-6)


def test_sizes_read_from_weights(bundle):
    resampler = Resampler.from_state_dict(bundle["image_proj"], dim_head=DIM_HEAD)
    assert len(resampler.layers) == TINY_RESAMPLER.depth
    attn = resampler.layers[0][0]
    assert (attn.heads, attn.dim_head) == (TINY_RESAMPLER.heads, DIM_HEAD)
    assert resampler.latents.shape == (1, TINY_RESAMPLER.num_queries, TINY_RESAMPLER.dim)
    assert resampler.layers[0][1][1].out_features == TINY_RESAMPLER.dim * TINY_RESAMPLER.ff_mult


def test_real_config_keys_and_shapes_on_meta():
    official = image_proj_key_shapes(SD15_RESAMPLER)
    with torch.device("meta"):
        module = Resampler()  # X-Dyna's defaults: dim 768, depth 4, 12 heads of 64, 16 queries, 1280 in
    assert {k: tuple(v.shape) for k, v in module.state_dict().items()} == official
    sd = {k: torch.empty(s, device="meta") for k, s in official.items()}
    loaded = Resampler.from_state_dict(sd)  # dim_head 64 by default
    assert loaded.latents.is_meta
    attn = loaded.layers[3][0]
    assert (len(loaded.layers), attn.heads, attn.dim_head) == (4, 12, 64)
    assert loaded.proj_in.in_features == 1280 and loaded.norm_out.normalized_shape == (768,)
    assert not any(
        m.bias is not None for layer in loaded.layers for m in layer.modules() if isinstance(m, torch.nn.Linear)
    )


def test_key_round_trip(bundle):
    sd = bundle["image_proj"]
    again = Resampler.from_state_dict(sd, dim_head=DIM_HEAD).state_dict()
    assert list(again) == list(sd)
    assert all(torch.equal(again[k], sd[k]) for k in sd)


def test_loads_every_layout(bundle, tmp_path):
    flat = {f"{part}.{k}": v for part, tensors in bundle.items() for k, v in tensors.items()}
    bin_path = save_bin(bundle, tmp_path / "ip-adapter-plus_sd15.bin")
    st_path = save_safetensors(flat, tmp_path / "ip-adapter-plus_sd15.safetensors")
    x = torch.randn(1, 5, TINY_RESAMPLER.embedding_dim)
    expected = Resampler.from_state_dict(bundle["image_proj"], dim_head=DIM_HEAD)(x)
    for obj in (bundle, flat, bin_path, str(st_path)):
        resampler = load_ip_adapter_plus(obj, dim_head=DIM_HEAD)
        assert not resampler.training
        torch.testing.assert_close(resampler(x), expected, atol=0, rtol=0)


def test_an_fp16_file_as_released_runs_on_float32_clip_features(tmp_path):
    """The released ip-adapter-plus_sd15.bin is fp16; CLIP features come as float32."""
    half = ip_adapter_plus_state_dict(TINY_UNET, seed=0, dtype=torch.float16)
    resampler = load_ip_adapter_plus(save_bin(half, tmp_path / "half.bin"), dim_head=DIM_HEAD)
    assert {p.dtype for p in resampler.parameters()} == {torch.float32}
    x = torch.randn(1, 5, TINY_RESAMPLER.embedding_dim)
    upcast = {k: v.float() for k, v in half["image_proj"].items()}
    torch.testing.assert_close(resampler(x), reference_resampler(upcast, x, DIM_HEAD), atol=1e-5, rtol=1e-5)


def test_errors(bundle, tmp_path):
    with pytest.raises(IPAdapterFormatError, match=r"missing\.bin.*no 'image_proj'"):
        load_ip_adapter_plus({"ip_adapter": bundle["ip_adapter"]}, source="missing.bin")

    base = {"proj.weight": torch.ones(3072, 1024), "proj.bias": torch.ones(3072)}
    base |= {"norm.weight": torch.ones(768), "norm.bias": torch.ones(768)}
    path = save_bin({"image_proj": base, "ip_adapter": bundle["ip_adapter"]}, tmp_path / "ip-adapter_sd15.bin")
    with pytest.raises(IPAdapterFormatError, match=r"ip-adapter_sd15\.bin.*base IP-Adapter.*not IP-Adapter-plus"):
        load_ip_adapter_plus(path)

    incomplete = {k: v for k, v in bundle["image_proj"].items() if k != "layers.1.1.3.weight"}
    with pytest.raises(IPAdapterFormatError, match="incomplete or inconsistent") as info:
        load_ip_adapter_plus({"image_proj": incomplete}, dim_head=DIM_HEAD, source="cut.bin")
    assert isinstance(info.value, XDynaCheckpointError) and isinstance(info.value, ValueError)

    with pytest.raises(IPAdapterFormatError, match="incomplete or inconsistent"):
        load_ip_adapter_plus(bundle, dim_head=7)  # 32-wide attention does not split into heads of 7
