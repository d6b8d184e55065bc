"""The released sampling schedule: DDIM timesteps for any step count and partial denoise (docs/xdyna_model.md §4).

The official DDIMScheduler (linear betas 0.00085–0.012 over 1000 steps, "leading" spacing, steps_offset 1)
runs 961, 921, …, 41, 1 for 25 steps: `ratio = 1000 // steps`, timesteps `i · ratio + 1` from high to low,
then a last step to ᾱ = 1. ComfyUI's `ddim_uniform` picks the same timesteps only when `steps` divides 1000
(10, 20, 25, 40, 50, …); for the others it starts higher and takes one step more (6 steps: 997, 831, … in 7
steps against the release's 831, 665, …, 1), so X-Dyna's scheduler builds its sigmas from this list.
"""

from __future__ import annotations

NUM_TRAIN_TIMESTEPS = 1000
# ratio 1 puts the first of 1000 steps at t = 1000, past the end of the 1000-entry table (the release fails there)
MAX_STEPS = NUM_TRAIN_TIMESTEPS - 1


def ddim_timesteps(steps: int, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> list[int]:
    """The official DDIM timesteps for `steps` steps, high to low (961, 921, …, 1 for 25)."""
    if not 1 <= steps <= num_train_timesteps - 1:
        raise ValueError(
            f"the released DDIM schedule takes 1 to {num_train_timesteps - 1} steps, got {steps}; use fewer steps"
        )
    ratio = num_train_timesteps // steps
    return [i * ratio + 1 for i in reversed(range(steps))]


def sampling_timesteps(steps: int, denoise: float = 1.0) -> list[int]:
    """The timesteps a run of `steps` steps visits at `denoise` (1 = the whole schedule).

    A partial denoise runs the last `steps` timesteps of the schedule for `steps / denoise` steps, as ComfyUI's
    KSampler does with its own schedulers (capped at the longest schedule); 0 runs none.
    """
    if not denoise == denoise or not 0.0 <= denoise <= 1.0:  # NaN fails both comparisons
        raise ValueError(f"denoise must lie in [0, 1], got {denoise}")
    if denoise <= 0.0:
        return []
    total = steps if denoise > 0.9999 else min(MAX_STEPS, max(steps, int(steps / denoise)))
    return ddim_timesteps(total)[-steps:]
