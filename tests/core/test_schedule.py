"""The released DDIM timesteps for any step count and for partial denoise (xdyna_core/schedule.py)."""

from __future__ import annotations

import pytest

from tests.oracles import official_loop
from xdyna_core.schedule import MAX_STEPS, ddim_timesteps, sampling_timesteps


def comfy_ddim_uniform(steps: int) -> list[int]:
    """The timesteps ComfyUI's ddim_uniform scheduler picks, high to low (comfy/samplers.py ddim_scheduler)."""
    return list(range(1, 1000, max(1000 // steps, 1)))[::-1]


@pytest.mark.parametrize("steps", range(1, 101))
def test_timesteps_are_the_release_for_every_step_count(steps):
    timesteps = ddim_timesteps(steps)
    assert timesteps == official_loop.ddim_timesteps(steps)
    assert len(timesteps) == steps and timesteps[-1] == 1 and timesteps == sorted(timesteps, reverse=True)


def test_the_release_matches_diffusers_for_every_step_count():
    diffusers = pytest.importorskip("diffusers")
    scheduler = diffusers.DDIMScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="linear", steps_offset=1
    )
    for steps in range(1, 101):
        scheduler.set_timesteps(steps)
        assert scheduler.timesteps.tolist() == ddim_timesteps(steps), steps


def test_core_ddim_uniform_agrees_only_when_the_steps_divide_1000():
    differing = [s for s in range(1, 101) if comfy_ddim_uniform(s) != ddim_timesteps(s)]
    assert 20 not in differing and 25 not in differing and 40 not in differing and 50 not in differing
    assert 6 in differing and 30 in differing
    assert comfy_ddim_uniform(6)[:2] == [997, 831] and ddim_timesteps(6)[:2] == [831, 665]
    assert len(differing) == 85  # the count measured when the mismatch was reported


def test_partial_denoise_runs_the_tail_of_a_longer_schedule_as_the_ksampler_does():
    assert sampling_timesteps(25, 1.0) == ddim_timesteps(25)
    assert sampling_timesteps(10, 0.5) == ddim_timesteps(20)[-10:]
    assert sampling_timesteps(7, 0.3) == ddim_timesteps(int(7 / 0.3))[-7:]  # KSampler: int(steps / denoise)
    assert sampling_timesteps(5, 0.0) == []
    assert sampling_timesteps(100, 0.05) == ddim_timesteps(MAX_STEPS)[-100:]  # capped at the longest schedule


@pytest.mark.parametrize("denoise", [float("nan"), -0.1, 1.5])
def test_denoise_outside_unit_range_is_refused(denoise):
    with pytest.raises(ValueError, match="denoise must lie in"):
        sampling_timesteps(10, denoise)


def test_step_counts_the_release_cannot_run_are_refused():
    with pytest.raises(ValueError, match="1 to 999 steps"):
        ddim_timesteps(1000)
    with pytest.raises(ValueError, match="1 to 999 steps"):
        ddim_timesteps(0)
