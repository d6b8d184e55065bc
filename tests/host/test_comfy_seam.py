"""The seam between X-Dyna and ComfyUI: what the memory manager plans for, offloading, re-applying the patch,
per-call state, attention overrides, and the knobs that change the released maths."""

from __future__ import annotations

import threading

import pytest
import torch

from tests.host.support_nodes import TinyControlNet
from tests.host.xdyna_setup import (
    apply_controlnets,
    comfy_eps,
    oracle_eps,
    pack,
    random_reference,
    recording,
    tiny_xdyna,
)

H, W, T_INDEX = 4, 6, 500


@pytest.fixture(scope="module")
def tiny(comfy_host):
    TinyControlNet.glue = pack(comfy_host, "xdyna_comfy.loaders")
    return tiny_xdyna(comfy_host, seed=21)


@pytest.fixture(scope="module")
def reference(comfy_host, tiny):
    return random_reference(comfy_host, tiny.layout, H, W, seed=4)


def text(seed: int = 0):
    return torch.randn(1, 77, 32, generator=torch.Generator().manual_seed(seed))


def inputs(frames: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(frames, 4, H, W, generator=gen) * 4, torch.randn(frames, 4, H, W, generator=gen)


def apply(comfy_host, model, tiny, reference, strength=1.0):
    node = pack(comfy_host, "nodes.model_nodes").XDynaApplyDynamicsAdapter
    return node.execute(model, tiny.weights, reference, strength).args[0]


def eps(model, frames=5, seed=1, cfg=0.0):
    latent, noise = inputs(frames, seed)
    return comfy_eps(model, latent, noise, text(1), text(2), cfg, T_INDEX)


# --- memory -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("frames", [16, 48, 192])
def test_the_memory_manager_plans_for_one_window(comfy_host, tiny, reference, frames, monkeypatch):
    import comfy.model_management
    import comfy.sampler_helpers

    planned = []
    real_load = comfy.model_management.load_models_gpu
    real_estimate = comfy.sampler_helpers.estimate_memory

    def load(models, memory_required=0, *args, **kwargs):
        planned.append(memory_required)
        return real_load(models, memory_required, *args, **kwargs)

    shapes = []

    def estimate(model, noise_shape, conds):
        shapes.append(list(noise_shape))
        return real_estimate(model, noise_shape, conds)

    monkeypatch.setattr(comfy.model_management, "load_models_gpu", load)
    monkeypatch.setattr(comfy.sampler_helpers, "estimate_memory", estimate)
    model, _ = recording(apply(comfy_host, tiny.model, tiny, reference))
    sampler = pack(comfy_host, "nodes.sampling_nodes").XDynaTemporalSampler
    positive = [[text(1), {}]]
    args = (model, positive, positive, reference, frames, 3, 1, 7.5, "ddim", "xdyna_ddim", 16, 4, "uniform_closed_loop")
    sampler.execute(*args, 1.0)
    assert shapes == [[17, 4, H, W]]  # one window of 16 frames plus the reference frame, whatever the length
    one_window, _ = real_estimate(model, [17, 4, H, W], {"positive": [], "negative": []})
    assert planned[0] >= one_window and planned[0] < 2 * one_window + comfy.model_management.extra_reserved_memory()


# --- offloading ---------------------------------------------------------------------------------------------


def test_x_dyna_weights_run_when_the_memory_manager_loads_half_of_them(comfy_host, tiny, reference, monkeypatch):
    """As on a GPU with too little free memory: ComfyUI's own partial load at half the weights' size."""
    import comfy.model_management

    components_type = type(tiny.weights.components)
    full = eps(apply(comfy_host, tiny.model, tiny, reference))[0]

    partial = []
    real_load = comfy.model_management.load_models_gpu

    def squeezed(models, *args, **kwargs):
        real_load(models, *args, **kwargs)
        for patcher in models:
            if isinstance(patcher.model, components_type):
                patcher.unpatch_model(patcher.offload_device)
                patcher.load(patcher.load_device, lowvram_model_memory=patcher.model_size() // 2)
                partial.append(patcher)

    monkeypatch.setattr(comfy.model_management, "load_models_gpu", squeezed)
    offloaded = eps(apply(comfy_host, tiny.model, tiny, reference))[0]
    assert partial, "the X-Dyna weights were not loaded by the memory manager"
    components = partial[0].model
    assert components.model_lowvram, "ComfyUI did not report a partial load"
    layers = [m for m in components.modules() if list(m.parameters(recurse=False))]
    left_behind = [m for m in layers if not getattr(m, "comfy_patched_weights", False)]
    assert left_behind, "ComfyUI loaded everything: the budget did not force a partial load"
    # every layer ComfyUI did not load casts its weights per call (so it can sit on the offload device)
    assert all(getattr(m, "comfy_cast_weights", False) for m in left_behind)
    torch.testing.assert_close(offloaded, full, rtol=0, atol=0)


# --- re-applying the patch ----------------------------------------------------------------------------------


def test_applying_twice_equals_applying_once_with_the_last_settings(comfy_host, tiny, reference):
    once = apply(comfy_host, tiny.model, tiny, reference, strength=0.0)
    twice = apply(comfy_host, apply(comfy_host, tiny.model, tiny, reference, strength=1.0), tiny, reference, 0.0)
    patches = twice.model_options["transformer_options"]["patches"]
    assert {name: len(entries) for name, entries in patches.items()} == {
        name: len(entries) for name, entries in once.model_options["transformer_options"]["patches"].items()
    }
    assert torch.equal(eps(twice)[0], eps(once)[0])
    assert not torch.equal(eps(once)[0], eps(apply(comfy_host, tiny.model, tiny, reference, strength=1.0))[0])


def test_other_packs_patches_survive_a_re_application(comfy_host, tiny, reference):
    model = tiny.model.clone()
    seen = []

    def other_pack(n, context, value, extra_options):
        seen.append(1)
        return n, context, value

    model.set_model_attn1_patch(other_pack)
    patched = apply(comfy_host, apply(comfy_host, model, tiny, reference), tiny, reference)
    eps(patched)
    assert seen and other_pack in patched.model_options["transformer_options"]["patches"]["attn1_patch"]


# --- the released maths of the knobs ------------------------------------------------------------------------


def test_dynamics_adapter_strength_scales_the_adapter_term_as_released(comfy_host, tiny, reference):
    half = apply(comfy_host, tiny.model, tiny, reference, strength=0.5)
    uncond, x, sigma = eps(half)
    cond, _, _ = eps(half, cfg=1.0)
    expected = oracle_eps(tiny.state_dict, reference, x, sigma, T_INDEX, text(1), text(2), adapter_scale=0.5)
    torch.testing.assert_close(torch.stack([cond, uncond]), expected, rtol=0, atol=1e-4)
    full = eps(apply(comfy_host, tiny.model, tiny, reference, strength=1.0))[0]
    assert (full - uncond).abs().max() > 1e-3


def test_hints_are_min_max_normalised_per_stream_over_the_clip(comfy_host, tiny, reference):
    """normalize_hints on = the official `(x - min) / (max - min)` per stream; off = the hints as given."""
    sampling = pack(comfy_host, "nodes.sampling_nodes")
    gen = torch.Generator().manual_seed(5)
    raw = 0.2 + 0.5 * torch.rand(5, H * 8, W * 8, 3, generator=gen)  # spans [0.2, 0.7], not [0, 1]
    normalised = (raw - raw.min()) / (raw.max() - raw.min())
    control = TinyControlNet().load(3, 3)[0]
    model = apply(comfy_host, tiny.model, tiny, reference)

    def run(hint, normalize):
        positive, negative = apply_controlnets(
            comfy_host,
            [[text(1), {}]],
            [[text(1), {}]],
            normalize_hints=normalize,
            pose_controlnet=control,
            pose_images=hint,
        )
        args = (model, positive, negative, reference, 5, 3, 1, 7.5, "ddim", "xdyna_ddim", 16, 4, "uniform_closed_loop")
        return sampling.XDynaTemporalSampler.execute(*args, 1.0).args[0]["samples"]

    on = run(raw, True)
    torch.testing.assert_close(on, run(normalised, False), rtol=0, atol=1e-5)
    assert (on - run(raw, False)).abs().max() > 1e-3


# --- per-call state -----------------------------------------------------------------------------------------


def test_joint_norm_frames_are_per_thread(comfy_host):
    """Two device threads evaluating windows of different lengths at once each normalise over their own frames."""
    model_patch = pack(comfy_host, "xdyna_comfy.model_patch")
    joint = pack(comfy_host, "xdyna_core.group_norm").joint_group_norm
    norm = torch.nn.GroupNorm(2, 4)
    stack = model_patch.joint_norm_stack(torch.nn.Sequential(norm, torch.nn.SiLU()))
    x = torch.randn(12, 4, 3, 3, generator=torch.Generator().manual_seed(0))
    barrier, results = threading.Barrier(2), {}

    def evaluate(frames: int) -> None:
        token = model_patch._JOINT_NORM_FRAMES.set(frames)  # what the wrapper does for its call
        try:
            barrier.wait()  # both threads have set their value before either computes
            results[frames] = stack(x)
        finally:
            model_patch._JOINT_NORM_FRAMES.reset(token)

    threads = [threading.Thread(target=evaluate, args=(f,)) for f in (3, 6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for frames in (3, 6):
        torch.testing.assert_close(results[frames], torch.nn.functional.silu(joint(x, frames, norm)))
    assert not torch.allclose(results[3], results[6])
    assert model_patch._JOINT_NORM_FRAMES.get() is None


def test_attention_overrides_apply_to_x_dyna_attention(comfy_host, tiny, reference):
    """A user's optimized_attention_override (set by other nodes) sees the adapter, IP and motion attention too."""
    frames = 5
    model = apply(comfy_host, tiny.model, tiny, reference)
    calls = []

    def override(func, q, k, v, heads, *args, **kwargs):
        calls.append((q.shape[1], k.shape[1]))
        return func(q, k, v, heads, *args, **kwargs)

    model.model_options["transformer_options"]["optimized_attention_override"] = override
    with_override = eps(model, frames)[0]
    tokens = H * W  # at the first level; deeper levels have fewer
    ip_calls = [c for c in calls if c[1] == 16]  # queries attending to the 16 image tokens
    motion_calls = [c for c in calls if c == (frames, frames)]  # attention across the window's frames
    adapter_calls = [c for c in calls if c[0] == (frames + 1) * c[1] and c[1] <= tokens]  # all frames → frame 0
    assert len(ip_calls) == 16 and len(adapter_calls) >= 16 and motion_calls
    del model.model_options["transformer_options"]["optimized_attention_override"]
    torch.testing.assert_close(eps(model, frames)[0], with_override, rtol=0, atol=0)


# --- core's Context Windows node ----------------------------------------------------------------------------


def test_core_context_windows_give_each_window_its_own_hint_frames(comfy_host, tiny, reference, monkeypatch):
    sampling = pack(comfy_host, "nodes.sampling_nodes")
    frames = 20
    hint = torch.arange(frames, dtype=torch.float32).div(100).reshape(-1, 1, 1, 1).expand(-1, H * 8, W * 8, 3)
    control = TinyControlNet().load(3, 3)[0]
    positive, negative = apply_controlnets(
        comfy_host,
        [[text(1), {}]],
        [[text(1), {}]],
        normalize_hints=False,
        pose_controlnet=control,
        pose_images=hint.contiguous(),
    )
    controlnet = pack(comfy_host, "xdyna_comfy.controlnets").XDynaControlNet
    seen, current = [], []
    real_control, real_hints = controlnet.get_control, controlnet._hints

    def get_control(self, x_noisy, t, cond, batched_number, transformer_options):
        current[:] = list(transformer_options["context_window"].index_list)
        return real_control(self, x_noisy, t, cond, batched_number, transformer_options)

    def hints(self, frames, x, dtype):
        out = real_hints(self, frames, x, dtype)
        seen.append((list(current), [round(v * 100) for v in out[:, 0, 0, 0].float().tolist()]))
        return out

    monkeypatch.setattr(controlnet, "get_control", get_control)
    monkeypatch.setattr(controlnet, "_hints", hints)
    core_windows = comfy_host.nodes.NODE_CLASS_MAPPINGS["ContextWindowsManual"]
    model = apply(comfy_host, tiny.model, tiny, reference)
    windowed = core_windows.execute(
        model, 16, 4, "standard_static", 1, False, "flat", 0, False, causal_window_fix=False
    ).args[0]
    stock = comfy_host.nodes.NODE_CLASS_MAPPINGS["KSampler"]()
    latent = sampling.XDynaInitLatent.execute(reference, frames, 7).args[0]
    stock.sample(windowed, 7, 1, 7.5, "ddim", "ddim_uniform", positive, negative, latent)
    assert len(seen) >= 2
    for window, given in seen:
        assert given == window, "a core window was given another window's hints"
