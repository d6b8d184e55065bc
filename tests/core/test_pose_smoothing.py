"""One Euro filter: its maths on synthetic signals, gaps, and smoothing of pose sequences."""

from __future__ import annotations

import math

import numpy as np
import pytest

from xdyna_core.pose.keypoints import PersonPose, PoseFrame, missing_points, present
from xdyna_core.pose.smoothing import OneEuroFilter, smooth_frames, smooth_tracks, smoothing_factor

RATE = 30.0


def test_smoothing_factor_is_a_first_order_low_pass():
    # α = 1 / (1 + τ/Te) with τ = 1/(2π fc), Te = 1/f
    for cutoff in (0.1, 1.0, 7.5):
        tau, te = 1.0 / (2 * math.pi * cutoff), 1.0 / RATE
        assert smoothing_factor(cutoff, RATE) == pytest.approx(1.0 / (1.0 + tau / te), rel=1e-12)


def test_constant_signal_passes_unchanged():
    out = smooth_tracks(np.full((50, 3), 7.25), RATE, min_cutoff=0.5, beta=3.0)
    np.testing.assert_array_equal(out, 7.25)


def test_beta_zero_is_an_exponential_smoother():
    # a unit step after the first sample: y_n = 1 - (1 - α)^n exactly, α from min_cutoff alone
    signal = np.r_[0.0, np.ones(20)]
    out = smooth_tracks(signal, RATE, min_cutoff=2.0, beta=0.0)
    alpha = smoothing_factor(2.0, RATE)
    expected = np.r_[0.0, 1.0 - (1.0 - alpha) ** np.arange(1, 21)]
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-12)


def test_one_step_by_hand():
    x0, x1, x2 = 1.0, 3.0, 4.0
    f = OneEuroFilter(RATE, min_cutoff=1.0, beta=0.5, d_cutoff=2.0)
    assert f(np.array(x0)) == x0
    ad = smoothing_factor(2.0, RATE)
    dx1 = ad * (x1 - x0) * RATE
    a1 = smoothing_factor(1.0 + 0.5 * abs(dx1), RATE)
    y1 = a1 * x1 + (1 - a1) * x0
    assert f(np.array(x1)) == pytest.approx(y1, rel=1e-12)
    dx2 = ad * (x2 - y1) * RATE + (1 - ad) * dx1
    a2 = smoothing_factor(1.0 + 0.5 * abs(dx2), RATE)
    assert f(np.array(x2)) == pytest.approx(a2 * x2 + (1 - a2) * y1, rel=1e-12)


def test_jitter_is_reduced_and_fast_motion_lags_less_with_beta():
    rng = np.random.default_rng(0)
    t = np.arange(300) / RATE
    noise = rng.normal(0.0, 1.0, t.shape)
    still = smooth_tracks(noise, RATE, min_cutoff=1.0, beta=0.0)
    assert still[30:].std() < 0.4 * noise[30:].std()
    ramp = 200.0 * t  # fast motion: 200 units per second
    lag_plain = np.abs(smooth_tracks(ramp, RATE, 1.0, 0.0) - ramp)[60:].mean()
    lag_adaptive = np.abs(smooth_tracks(ramp, RATE, 1.0, 0.5) - ramp)[60:].mean()
    assert lag_adaptive < 0.1 * lag_plain
    # a steady ramp converges to a constant lag: with beta = 0 it is speed / (2π·min_cutoff)
    assert np.abs(smooth_tracks(ramp, RATE, 1.0, 0.0) - ramp)[-1] == pytest.approx(
        200.0 * (1 - smoothing_factor(1.0, RATE)) / (smoothing_factor(1.0, RATE) * RATE), rel=1e-6
    )


def test_gaps_stay_missing_and_restart_the_filter():
    signal = np.array([0.0, 0.0, 0.0, np.nan, np.nan, 10.0, 10.0])
    out = smooth_tracks(signal, RATE, min_cutoff=0.5)
    assert np.isnan(out[3]) and np.isnan(out[4])
    assert out[5] == 10.0 and out[6] == 10.0  # not dragged from 0


def test_bad_parameters_raise():
    with pytest.raises(ValueError, match="One Euro"):
        OneEuroFilter(0.0)
    with pytest.raises(ValueError, match="One Euro"):
        OneEuroFilter(30.0, beta=-1.0)


def test_smooth_frames_keeps_missing_points_people_and_parts():
    rng = np.random.default_rng(1)
    frames = []
    for t in range(20):
        body = missing_points(18)
        body[0] = (100 + rng.normal(0, 2), 200 + rng.normal(0, 2), 1.0)
        if t != 7:
            body[4] = (300.0, 400.0, 1.0)
        hand = None if t % 5 == 0 else np.column_stack([np.full(21, 50.0 + t), np.full(21, 60.0), np.ones(21)])
        people = [] if t == 12 else [PersonPose(body, None, hand, None)]
        frames.append(PoseFrame(512, 896, people))
    smoothed = smooth_frames(frames, RATE, min_cutoff=0.5, beta=0.0, method="one_euro")
    assert len(smoothed[12].people) == 0
    assert not present(smoothed[7].people[0].body)[4] and present(smoothed[8].people[0].body)[4]
    assert smoothed[5].people[0].left_hand is None and smoothed[6].people[0].left_hand is not None
    assert smoothed[6].people[0].left_hand[0, 0] == 56.0  # first sample after a gap passes unchanged
    raw = np.array([f.people[0].body[0, 0] for f in frames if f.people])
    out = np.array([f.people[0].body[0, 0] for f in smoothed if f.people])
    assert np.diff(out).std() < np.diff(raw).std()
    assert not present(smoothed[3].people[0].body)[1]  # never-present points stay missing


# --- zero lag: forward–backward over the whole clip -------------------------------------------------------

CLIP_RATE = 8.0  # the example driving videos


def best_shift(output: np.ndarray, truth: np.ndarray, margin: int = 10) -> float:
    """The time shift (frames, 0.01 steps) that best aligns the output with the truth: its lag."""
    frames = np.arange(len(truth), dtype=np.float64)

    def error(shift: float) -> float:
        moved = np.interp(frames + shift, frames, output)
        return float(((moved - truth)[margin:-margin] ** 2).sum())

    return min(np.arange(-3.0, 3.0, 0.01), key=error)


def test_zero_lag_follows_a_ramp_where_the_causal_filter_lags():
    ramp = 50.0 * np.arange(80) / CLIP_RATE  # 50 px/s, beginning and ending in mid-stride
    causal = smooth_tracks(ramp, CLIP_RATE, 1.0, 0.0)
    zero = smooth_tracks(ramp, CLIP_RATE, 1.0, 0.0, method="zero_lag")
    lag = np.abs(causal - ramp)[-1]
    assert lag > 5.0  # about a frame behind at 8 fps
    assert np.abs(zero - ramp).max() < 0.02 * lag  # at the ends too: the padding continues the motion


def test_zero_lag_adds_no_lag_on_a_sine():
    truth = 100.0 * np.sin(2 * np.pi * 0.5 * np.arange(80) / CLIP_RATE)
    for beta in (0.0, 0.005):  # per px/s: the cutoff rises to 2.6 Hz at the sine's top speed
        zero = smooth_tracks(truth, CLIP_RATE, 1.0, beta, method="zero_lag")
        causal = smooth_tracks(truth, CLIP_RATE, 1.0, beta)
        assert abs(best_shift(zero, truth)) <= 0.01, beta
        assert best_shift(causal, truth) >= 0.3, beta  # the causal filter is behind


def test_zero_lag_smooths_jitter_and_keeps_gaps():
    rng = np.random.default_rng(2)
    noise = rng.normal(0.0, 1.0, 200)
    zero = smooth_tracks(noise, CLIP_RATE, 1.0, 0.0, method="zero_lag")
    causal = smooth_tracks(noise, CLIP_RATE, 1.0, 0.0)
    assert zero.std() < causal.std() < noise.std()
    step = np.array([0.0] * 6 + [np.nan] * 3 + [10.0] * 6)
    out = smooth_tracks(step, CLIP_RATE, 1.0, 0.0, method="zero_lag")
    assert np.isnan(out[6:9]).all()
    np.testing.assert_allclose(out[:6], 0.0, atol=1e-12)  # nothing leaks across the gap, either way
    np.testing.assert_allclose(out[9:], 10.0, atol=1e-12)
    np.testing.assert_array_equal(smooth_tracks(np.array([3.0]), CLIP_RATE, method="zero_lag"), [3.0])
    with pytest.raises(ValueError, match="smoothing method"):
        smooth_tracks(noise, CLIP_RATE, method="gaussian")


def test_whole_clips_are_smoothed_without_lag_by_default():
    frames = []
    for t in range(40):
        body = missing_points(18)
        body[0] = (100.0 + 6.0 * t, 200.0, 1.0)  # the nose moves right at 48 px/s
        frames.append(PoseFrame(512, 896, [PersonPose(body)]))
    default = [f.people[0].body[0, 0] for f in smooth_frames(frames, CLIP_RATE, min_cutoff=1.0, beta=0.0)]
    causal = smooth_frames(frames, CLIP_RATE, min_cutoff=1.0, beta=0.0, method="one_euro")
    truth = 100.0 + 6.0 * np.arange(40)
    assert np.abs(np.array(default) - truth).max() < 0.1
    assert (truth - np.array([f.people[0].body[0, 0] for f in causal]))[-1] > 4.0
