"""The temporal sampler's schedule, frame counts, bad inputs and interruption."""

from __future__ import annotations

import pytest
import torch

from tests.fixtures.official_layout import TINY_UNET
from tests.host.support_nodes import TinyControlNet
from tests.host.xdyna_setup import apply_controlnets, pack, random_reference, recording, tiny_xdyna
from tests.oracles.official_loop import alphas_cumprod, ddim_timesteps

H, W = 4, 6


@pytest.fixture(scope="module")
def setup(comfy_host):
    TinyControlNet.glue = pack(comfy_host, "xdyna_comfy.loaders")
    tiny = tiny_xdyna(comfy_host, seed=41, residual_gain=0.1, output_gain=0.1)
    reference = random_reference(comfy_host, TINY_UNET, H, W, seed=2)
    model = (
        pack(comfy_host, "nodes.model_nodes")
        .XDynaApplyDynamicsAdapter.execute(tiny.model, tiny.weights, reference, 1.0)
        .args[0]
    )
    text = [[torch.randn(1, 77, 32, generator=torch.Generator().manual_seed(0)), {}]]
    return model, reference, text


def sample(comfy_host, setup, frames=5, steps=2, scheduler="xdyna_ddim", length=16, overlap=4, **kwargs):
    model, reference, text = setup
    positive, negative = kwargs.pop("conditioning", (text, text))
    sampler = pack(comfy_host, "nodes.sampling_nodes").XDynaTemporalSampler
    args = (model, positive, negative, reference, frames, 7, steps, 7.5, "ddim", scheduler, length, overlap)
    return sampler.execute(*args, "uniform_closed_loop", 1.0, **kwargs).args[0]["samples"]


def steps_run(seen: list[float]) -> list[int]:
    """One entry per sampling step (both CFG branches of a step may come in one call or two)."""
    return [int(t) for t in dict.fromkeys(seen)]


def test_the_temporal_sampler_runs_the_released_timesteps_for_every_step_count(comfy_host, setup):
    model, reference, text = setup
    sampler = pack(comfy_host, "nodes.sampling_nodes").XDynaTemporalSampler
    for steps in range(1, 101):
        copy, seen = recording(model)
        args = (copy, text, text, reference, 1, 7, steps, 7.5, "ddim", "xdyna_ddim", 16, 4, "uniform_closed_loop")
        sampler.execute(*args, 1.0)
        assert steps_run(seen) == ddim_timesteps(steps), f"{steps} steps"
        assert all(t == int(t) for t in seen)


def test_the_scheduler_node_gives_stock_samplers_the_released_timesteps(comfy_host, setup):
    """X-Dyna Scheduler → core SamplerCustom (ddim from KSamplerSelect): the UNet sees the released timesteps."""
    model, reference, text = setup
    sampling = pack(comfy_host, "nodes.sampling_nodes")
    core = comfy_host.nodes.NODE_CLASS_MAPPINGS
    sampler = core["KSamplerSelect"].execute("ddim").args[0]
    latent = sampling.XDynaInitLatent.execute(reference, 1, 7).args[0]
    for steps in range(1, 101):
        copy, seen = recording(model)
        sigmas = sampling.XDynaScheduler.execute(copy, steps, 1.0).args[0]
        core["SamplerCustom"].execute(copy, True, 7, 7.5, text, text, sampler, sigmas, latent)
        assert steps_run(seen) == ddim_timesteps(steps), f"{steps} steps"


def test_released_sigmas_are_the_release_alphas_and_follow_core_samplers_conventions(comfy_host, setup):
    import comfy.samplers

    model = setup[0]
    sampling = pack(comfy_host, "xdyna_comfy.sigmas")
    table = alphas_cumprod().double()
    for steps in (7, 25, 30):
        sigmas = sampling.released_sigmas(model, steps)
        expected = [((1 - table[t]) / table[t]).sqrt().item() for t in ddim_timesteps(steps)] + [0.0]
        torch.testing.assert_close(sigmas.double(), torch.tensor(expected, dtype=torch.float64), rtol=1e-4, atol=0)
    core = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "ddim_uniform", 25)
    torch.testing.assert_close(core.float(), sampling.released_sigmas(model, 25), rtol=1e-6, atol=0)
    # dpm_2 and friends run one step more and drop the penultimate sigma, as core's KSampler does
    longer = sampling.released_sigmas(model, 11)
    torch.testing.assert_close(sampling.released_sigmas(model, 10, sampler_name="dpm_2"), longer[[*range(10), 11]])
    # a partial denoise keeps the tail of the longer schedule
    torch.testing.assert_close(sampling.released_sigmas(model, 10, 0.5), sampling.released_sigmas(model, 20)[-11:])
    assert sampling.released_sigmas(model, 10, 0.0).numel() == 0


def test_frame_count_comes_from_the_pose_frames(comfy_host, setup):
    out = sample(comfy_host, setup, frames=3, steps=1, pose_images=torch.rand(6, H * 8, W * 8, 3))
    assert out.shape[0] == 6


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"frames": 0}, "at least 1 frame"),
        ({"length": 25}, "longer than the 24 frames"),
        ({"length": 8, "overlap": 8}, "leaves no stride"),
    ],
)
def test_bad_sampler_inputs_are_named(comfy_host, setup, kwargs, message):
    with pytest.raises(ValueError, match=message):
        sample(comfy_host, setup, steps=1, **kwargs)


def test_face_frames_that_differ_from_the_video_are_an_error(comfy_host, setup):
    text = setup[2]
    face = TinyControlNet().load(1, 6)[0]
    conditioning = apply_controlnets(
        comfy_host, text, text, face_controlnet=face, face_condition=torch.rand(4, H * 8, W * 8, 6)
    )
    with pytest.raises(ValueError, match="S-Face ControlNet hint has 4 frames but the video has 20"):
        sample(comfy_host, setup, frames=20, steps=1, conditioning=conditioning)


def test_interrupting_between_windows_leaves_the_next_run_identical(comfy_host, setup):
    import comfy.model_management

    fresh = sample(comfy_host, setup, frames=20)
    context_patch = pack(comfy_host, "xdyna_comfy.context_windows")
    calls = {"windows": 0}
    original = context_patch.model_management.throw_exception_if_processing_interrupted

    def interrupt_at_second_window():
        calls["windows"] += 1
        if calls["windows"] == 2:
            comfy.model_management.interrupt_current_processing(True)
        original()

    context_patch.model_management.throw_exception_if_processing_interrupted = interrupt_at_second_window
    try:
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            sample(comfy_host, setup, frames=20)
    finally:
        context_patch.model_management.throw_exception_if_processing_interrupted = original
        comfy.model_management.interrupt_current_processing(False)
    assert calls["windows"] == 2
    assert torch.equal(sample(comfy_host, setup, frames=20), fresh)


def test_init_latent_and_stock_ksampler_give_the_temporal_samplers_video(comfy_host, setup):
    """XDyna_InitLatent + core KSampler (same seed, ddim / ddim_uniform) = XDyna_TemporalSampler, windows included."""
    import nodes as core_nodes

    model, reference, text = setup
    sampling = pack(comfy_host, "nodes.sampling_nodes")
    latent = sampling.XDynaInitLatent.execute(reference, 20, 7).args[0]
    stock = core_nodes.KSampler().sample(model, 7, 2, 7.5, "ddim", "ddim_uniform", text, text, latent, denoise=1.0)
    ours = sample(comfy_host, setup, frames=20, steps=2)
    assert torch.equal(stock[0]["samples"], ours)
