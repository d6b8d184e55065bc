"""The oracle of the official sampling loop (tests/oracles/official_loop.py) is itself right.

Its schedule and DDIM step are checked against hand values and, where installed, diffusers' DDIMScheduler with the
release's config; its window handling with a stand-in UNet whose outputs are known; and whole runs on tiny
official-layout weights for determinism and for agreement with a direct evaluation when one window holds the clip.
"""

from __future__ import annotations

import math

import pytest
import torch

from tests.fixtures.official_layout import TINY_UNET
from tests.fixtures.weights import xdyna_unet_state_dict
from tests.oracles import official_loop
from tests.oracles.official_loop import (
    add_noise,
    alphas_cumprod,
    ddim_step,
    ddim_timesteps,
    official_sample,
    previous_alpha_cumprod,
)
from tests.oracles.xdyna_unet3d import xdyna_unet3d
from xdyna_core.latents import initial_latent, mask_generator
from xdyna_core.windows import static_windows

H, W = 4, 6
CTX = TINY_UNET.cross_attention_dim

# ------------------------------------------------------------------------------------------------- schedule


def test_timesteps_of_25_steps():
    assert ddim_timesteps(25) == list(range(961, 0, -40))
    assert ddim_timesteps(25)[:3] == [961, 921, 881] and ddim_timesteps(25)[-1] == 1
    assert ddim_timesteps(50) == list(range(981, 0, -20))
    assert ddim_timesteps(30) == [33 * i + 1 for i in reversed(range(30))]  # 958 … 1: 1000 // 30 = 33


def test_previous_alpha_goes_to_one_after_the_last_timestep():
    table = alphas_cumprod()
    assert previous_alpha_cumprod(961, 25, table) == table[921]
    assert previous_alpha_cumprod(41, 25, table) == table[1]
    assert previous_alpha_cumprod(1, 25, table).item() == 1.0


def test_one_ddim_step_on_known_numbers():
    x, eps = torch.tensor([1.0, -2.0]), torch.tensor([0.5, 0.25])
    out = ddim_step(x, eps, torch.tensor(0.25), torch.tensor(0.64))
    x0 = (x - math.sqrt(0.75) * eps) / 0.5  # [2 - sqrt(.75)/2 ... ]
    torch.testing.assert_close(out, 0.8 * x0 + 0.6 * eps)
    torch.testing.assert_close(out[0], torch.tensor(0.8 * (2 - math.sqrt(0.75)) + 0.3))
    # to alpha 1 the step returns the x0 prediction
    torch.testing.assert_close(ddim_step(x, eps, torch.tensor(0.25), torch.tensor(1.0)), x0)
    # with the true noise, a step lands exactly on the forward process at the target timestep
    table = alphas_cumprod()
    clean, noise = torch.randn(3, 5), torch.randn(3, 5)
    stepped = ddim_step(add_noise(clean, noise, 961), noise, table[961], table[921])
    torch.testing.assert_close(stepped, add_noise(clean, noise, 921), rtol=0, atol=1e-4)


def test_schedule_and_step_match_diffusers_ddim_with_the_release_config():
    diffusers = pytest.importorskip("diffusers")
    scheduler = diffusers.DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="linear",
        steps_offset=1,
        clip_sample=False,
    )
    for steps in (10, 20, 25, 30, 50):
        scheduler.set_timesteps(steps)
        assert scheduler.timesteps.tolist() == ddim_timesteps(steps), steps
    torch.testing.assert_close(scheduler.alphas_cumprod, alphas_cumprod(), rtol=0, atol=0)

    scheduler.set_timesteps(25)
    g = torch.Generator().manual_seed(0)
    clean, noise = torch.randn(2, 4, H, W, generator=g), torch.randn(2, 4, H, W, generator=g)
    ours = add_noise(clean, noise, 961)
    torch.testing.assert_close(ours, scheduler.add_noise(clean, noise, torch.tensor([961])), rtol=0, atol=0)
    theirs = ours.clone()
    table = alphas_cumprod()
    for t in ddim_timesteps(25):
        eps = torch.randn(ours.shape, generator=g)
        theirs = scheduler.step(eps, t, theirs, eta=0.0).prev_sample
        ours = ddim_step(ours, eps, table[t], previous_alpha_cumprod(t, 25, table))
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)


# ------------------------------------------------------------------------ windows and averaging (stand-in UNet)


class StandInUNet:
    """Replaces xdyna_unet3d: call k returns eps = k (unconditional) and 10·k (conditional) on every element."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def __call__(self, sd, noisy, reference, timestep, text_context, image_tokens, *, control=None, **kwargs):
        assert noisy.shape[0] == 2 and reference.shape == (2, *noisy.shape[2:])
        self.calls.append({"frames": noisy.shape[1], "t": timestep, "control": control})
        k = float(len(self.calls))
        return torch.stack([torch.full(noisy.shape[1:], k), torch.full(noisy.shape[1:], 10 * k)])


def stand_in_run(monkeypatch, n: int, offsets: list[int], cfg: float, windows_fn=None):
    unet = StandInUNet()
    monkeypatch.setattr(official_loop, "xdyna_unet3d", unet)
    seen: list[tuple[int, int, list[int]]] = []

    def control_fn(frames, step, t, noisy):
        seen.append((step, t, list(frames)))
        return None

    init = torch.randn(n, 4, 1, 1, generator=torch.Generator().manual_seed(n))
    out = official_sample(
        {},
        init,
        torch.zeros(4, 1, 1),
        torch.zeros(77, CTX),
        torch.zeros(77, CTX),
        torch.zeros(16, CTX),
        torch.zeros(16, CTX),
        steps=len(offsets),
        cfg=cfg,
        offsets=offsets,
        control_fn=control_fn,
        windows_fn=windows_fn,
    )
    return init, out, seen, unet


def test_twenty_frames_are_windowed_averaged_then_guided_then_stepped(monkeypatch):
    n, offsets, cfg = 20, [3, 15], 7.5
    init, out, seen, unet = stand_in_run(monkeypatch, n, offsets, cfg)
    first = list(range(3, 19))
    second = list(range(15, 20)) + list(range(11))
    third = list(range(15, 20)) + list(range(11))
    fourth = list(range(7, 20)) + list(range(3))
    timesteps = ddim_timesteps(2)
    assert seen == [(0, timesteps[0], first), (0, timesteps[0], second), (1, timesteps[1], third), (1, 1, fourth)]
    assert [c["frames"] for c in unet.calls] == [16] * 4 and [c["t"] for c in unet.calls] == [501, 501, 1, 1]

    # expected: per frame, the mean of the calls covering it, per branch, then CFG, then DDIM
    table = alphas_cumprod()
    x = init.clone()
    call = 0
    for step, windows in enumerate([[first, second], [third, fourth]]):
        uncond, cond, count = torch.zeros(n), torch.zeros(n), torch.zeros(n)
        for window in windows:
            call += 1
            for f in window:
                uncond[f] += call
                cond[f] += 10 * call
                count[f] += 1
        assert (count >= 1).all()
        uncond, cond = uncond / count, cond / count
        eps = (uncond + cfg * (cond - uncond)).reshape(n, 1, 1, 1).expand_as(x)
        t = timesteps[step]
        x = ddim_step(x, eps, table[t], previous_alpha_cumprod(t, 2, table))
    torch.testing.assert_close(out, x, rtol=0, atol=1e-6)


def test_short_clips_ignore_the_offsets_and_other_schedules_plug_in(monkeypatch):
    _, out_a, seen, _ = stand_in_run(monkeypatch, 7, [0, 0], 2.0)
    _, out_b, _, _ = stand_in_run(monkeypatch, 7, [5, 11], 2.0)
    assert [frames for _, _, frames in seen] == [list(range(7))] * 2
    torch.testing.assert_close(out_a, out_b, rtol=0, atol=0)

    def static(num_frames, step):
        return [w.frames for w in static_windows(num_frames, 16, 4)]

    _, _, seen, _ = stand_in_run(monkeypatch, 20, [3, 9], 2.0, windows_fn=static)
    assert [frames for _, _, frames in seen] == [list(range(16)), list(range(4, 20))] * 2


def test_control_is_shared_by_both_branches_or_passed_per_branch(monkeypatch):
    captured = []

    def stand_in(sd, noisy, reference, timestep, text_context, image_tokens, *, control=None, **kwargs):
        captured.append(control)
        return torch.zeros(noisy.shape)

    monkeypatch.setattr(official_loop, "xdyna_unet3d", stand_in)
    shared = {"down": [torch.randn(5, 8, 1, 1)], "mid": torch.randn(5, 8, 1, 1)}
    per_branch = {"down": [torch.randn(2, 5, 8, 1, 1)], "mid": torch.randn(2, 5, 8, 1, 1)}
    args = [torch.zeros(5, 4, 1, 1), torch.zeros(4, 1, 1), *[torch.zeros(1, 1)] * 4]
    official_sample({}, *args, steps=1, cfg=7.5, offsets=None, control_fn=lambda f, s, t, x: shared)
    official_sample({}, *args, steps=1, cfg=7.5, offsets=None, control_fn=lambda f, s, t, x: per_branch)
    official_sample({}, *args, steps=1, cfg=7.5, offsets=None)
    first, second, third = captured
    assert first["mid"].shape == (2, 5, 8, 1, 1)
    torch.testing.assert_close(first["mid"][0], shared["mid"])
    torch.testing.assert_close(first["down"][0][1], shared["down"][0])
    assert second["mid"] is per_branch["mid"] and second["down"][0] is per_branch["down"][0]
    assert third is None


def test_bad_offsets_are_rejected():
    args = [torch.zeros(20, 4, 1, 1), torch.zeros(4, 1, 1), *[torch.zeros(1, 1)] * 4]
    with pytest.raises(ValueError, match="one offset per step"):
        official_sample({}, *args, steps=3, cfg=7.5, offsets=[1])


# ---------------------------------------------------------------------------------------- tiny real weights


@pytest.fixture(scope="module")
def sd() -> dict[str, torch.Tensor]:
    return xdyna_unet_state_dict(TINY_UNET, seed=0)


@pytest.fixture(scope="module")
def conditioning() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(11)
    return {
        "reference_latent": torch.randn(4, H, W, generator=g),
        "text_cond": torch.randn(77, CTX, generator=g),
        "text_uncond": torch.randn(77, CTX, generator=g),
        "tokens_cond": torch.randn(16, CTX, generator=g),
        "tokens_uncond": torch.randn(16, CTX, generator=g),
    }


def x_t(reference: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """The release's starting point: blur-mixed reference video noised to t = 961."""
    clean = initial_latent(reference, n, mask_generator(seed))
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(seed))
    return add_noise(clean, noise, 961)


def control_shapes() -> tuple[list[tuple[int, int, int]], tuple[int, int, int]]:
    """(C, h, w) of the 12 skip features and the mid block of TINY_UNET at a 4x6 latent (stride-2 convs: ceil)."""
    widths = TINY_UNET.block_out_channels
    sizes = [(H, W)]
    for _ in widths[1:]:
        sizes.append((math.ceil(sizes[-1][0] / 2), math.ceil(sizes[-1][1] / 2)))
    down = [(widths[0], *sizes[0])]
    for level, c in enumerate(widths):
        down += [(c, *sizes[level])] * 2
        if level < len(widths) - 1:
            down.append((c, *sizes[level + 1]))
    return down, (widths[-1], *sizes[-1])


def per_frame_control(frames: list[int], step: int, t: int, noisy=None) -> dict:
    """Residuals that depend only on (frame, step), as a ControlNet's do, shared by both CFG branches."""
    down, mid = control_shapes()

    def residual(shape, k):
        rows = [torch.randn(shape, generator=torch.Generator().manual_seed(1000 * f + 10 * step + k)) for f in frames]
        return 0.3 * torch.stack(rows)

    return {"down": [residual(s, k) for k, s in enumerate(down)], "mid": residual(mid, len(down))}


def test_one_window_equals_direct_evaluation_of_the_whole_clip(sd, conditioning):
    n, steps, cfg = 7, 2, 7.5
    init = x_t(conditioning["reference_latent"], n, seed=3)
    with torch.no_grad():
        out = official_sample(sd, init, **conditioning, steps=steps, cfg=cfg, offsets=[4, 9])
        table = alphas_cumprod()
        x = init.clone()
        c = conditioning
        text = torch.stack([c["text_uncond"], c["text_cond"]])
        tokens = torch.stack([c["tokens_uncond"], c["tokens_cond"]])
        reference = c["reference_latent"].expand(2, -1, -1, -1)
        for t in ddim_timesteps(steps):
            eps_uc, eps_c = xdyna_unet3d(sd, x.expand(2, -1, -1, -1, -1), reference, t, text, tokens).unbind(0)
            eps = eps_uc + cfg * (eps_c - eps_uc)
            x = ddim_step(x, eps, table[t], previous_alpha_cumprod(t, steps, table))
    torch.testing.assert_close(out, x, rtol=0, atol=1e-6)


@pytest.mark.parametrize("n", [7, 20])
def test_tiny_runs_are_deterministic_and_offsets_matter_only_past_one_window(sd, conditioning, n):
    init = x_t(conditioning["reference_latent"], n, seed=5)
    args = {"steps": 2, "cfg": 7.5}
    with torch.no_grad():
        a = official_sample(sd, init, **conditioning, **args, offsets=[2, 13])
        b = official_sample(sd, init, **conditioning, **args, offsets=[2, 13])
        # (that N <= 16 ignores the offsets is shown with the stand-in UNet above)
        c = official_sample(sd, init, **conditioning, **args, offsets=[0, 5]) if n > 16 else None
    assert a.shape == (n, 4, H, W) and torch.isfinite(a).all()
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    if c is not None:
        assert (a - c).abs().max() > 1e-4


@pytest.mark.parametrize("n", [7, 20])
def test_control_residuals_reach_every_frame(sd, conditioning, n):
    init = x_t(conditioning["reference_latent"], n, seed=8)
    args = {"steps": 1, "cfg": 7.5, "offsets": [6]}
    with torch.no_grad():
        plain = official_sample(sd, init, **conditioning, **args)
        steered = official_sample(sd, init, **conditioning, **args, control_fn=per_frame_control)
        if n <= 16:
            down, mid = control_shapes()

            def zeros(frames, step, t, noisy):
                return {"down": [torch.zeros(len(frames), *s) for s in down], "mid": torch.zeros(len(frames), *mid)}

            zero = official_sample(sd, init, **conditioning, **args, control_fn=zeros)
            torch.testing.assert_close(zero, plain, rtol=0, atol=1e-6)
    assert (steered - plain).abs().amax(dim=(1, 2, 3)).min() > 1e-4  # every frame is steered
