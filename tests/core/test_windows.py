"""Context windows (xdyna_core/windows.py): the released closed-loop schedule, the static one, fusing, offsets."""

from __future__ import annotations

import pytest
import torch

from tests.oracles.official_loop import official_windows
from xdyna_core.windows import (
    CONTEXT_SCHEDULES,
    MAX_WINDOW_LENGTH,
    ContextWindow,
    WindowAverage,
    context_windows,
    frames_kept_between_windows,
    static_windows,
    uniform_closed_loop,
    validate_window_options,
    window_coverage,
    window_offsets,
)


def frames(windows: list[ContextWindow]) -> list[list[int]]:
    return [list(w.frames) for w in windows]


def span(start: int, stop: int) -> list[int]:
    return list(range(start, stop))


# ------------------------------------------------------------------------------------------ exact window lists


@pytest.mark.parametrize("offset", [0, 5, 15])
def test_short_videos_get_one_window_of_all_frames_and_ignore_the_offset(offset):
    assert frames(uniform_closed_loop(7, 16, 4, offset)) == [span(0, 7)]
    assert frames(uniform_closed_loop(16, 16, 4, offset)) == [span(0, 16)]
    assert frames(uniform_closed_loop(1, 16, 4, offset)) == [[0]]


def test_twenty_frames_wrap_round_to_the_start():
    assert frames(uniform_closed_loop(20, 16, 4, 0)) == [span(0, 16), span(12, 20) + span(0, 8)]
    assert frames(uniform_closed_loop(20, 16, 4, 3)) == [span(3, 19), span(15, 20) + span(0, 11)]
    assert frames(uniform_closed_loop(20, 16, 4, 15)) == [span(15, 20) + span(0, 11), span(7, 20) + span(0, 3)]


def test_seventeen_frames():
    assert frames(uniform_closed_loop(17, 16, 4, 0)) == [span(0, 16), span(12, 17) + span(0, 11)]


def test_sixty_four_frames():
    # starts 0, 12, 24, 36, 48, 60 (all below 64): six windows, the last wrapping round.
    assert frames(uniform_closed_loop(64, 16, 4, 0)) == [
        span(0, 16),
        span(12, 28),
        span(24, 40),
        span(36, 52),
        span(48, 64),
        span(60, 64) + span(0, 12),
    ]
    assert frames(uniform_closed_loop(64, 16, 4, 7)) == [
        span(7, 23),
        span(19, 35),
        span(31, 47),
        span(43, 59),
        span(55, 64) + span(0, 7),
        span(3, 19),
    ]


def test_other_lengths_and_overlaps():
    assert frames(uniform_closed_loop(10, 4, 1, 2)) == [
        [2, 3, 4, 5],
        [5, 6, 7, 8],
        [8, 9, 0, 1],
        [1, 2, 3, 4],
    ]
    assert frames(uniform_closed_loop(30, 24, 0, 0)) == [span(0, 24), span(24, 30) + span(0, 18)]


def test_static_windows_end_on_the_last_frame_without_wrapping():
    assert frames(static_windows(7)) == [span(0, 7)]
    assert frames(static_windows(16)) == [span(0, 16)]
    assert frames(static_windows(20)) == [span(0, 16), span(4, 20)]
    assert frames(static_windows(28)) == [span(0, 16), span(12, 28)]
    assert frames(static_windows(64)) == [span(0, 16), span(12, 28), span(24, 40), span(36, 52), span(48, 64)]
    assert frames(context_windows(20, "static", offset=9)) == frames(static_windows(20))


def test_pack_schedule_equals_the_oracle_restatement():
    for n in range(1, 70):
        for offset in range(16):
            assert frames(uniform_closed_loop(n, 16, 4, offset)) == official_windows(n, 16, 4, offset), (n, offset)


# ------------------------------------------------------------------------------------------------ coverage


@pytest.mark.parametrize("schedule", CONTEXT_SCHEDULES)
def test_every_frame_is_covered_every_step(schedule):
    for n in range(1, 80):
        for length, overlap in ((16, 4), (8, 3), (24, 0), (5, 4)):
            for offset in (0, 1, length - 1):
                windows = context_windows(n, schedule, length, overlap, offset)
                assert (window_coverage(windows, n) >= 1).all(), (schedule, n, length, overlap, offset)
                for w in windows:
                    assert len(w) == min(length, n)
                    assert len(set(w.frames)) == len(w), "a window repeats a frame"
                    assert 0 <= min(w.frames) and max(w.frames) < n


def test_coverage_counts_on_twenty_frames():
    counts = window_coverage(uniform_closed_loop(20, 16, 4, 0), 20)
    expected = [2] * 8 + [1] * 4 + [2] * 4 + [1] * 4
    assert counts.tolist() == expected


# -------------------------------------------------------------------------------------------------- fusing


def average(predictions, windows, n):
    fused = WindowAverage(n, 1)
    for prediction, window in zip(predictions, windows):
        fused.add(window, [prediction])
    return fused.average()[0]


def test_averaging_is_count_weighted():
    n = 20
    windows = uniform_closed_loop(n, 16, 4, 3)
    g = torch.Generator().manual_seed(0)
    predictions = [torch.randn(len(w), 4, 2, 3, generator=g) for w in windows]
    fused = average(predictions, windows, n)
    for frame in range(n):
        seen = [p[w.frames.index(frame)] for p, w in zip(predictions, windows) if frame in w.frames]
        torch.testing.assert_close(fused[frame], torch.stack(seen).mean(0), rtol=0, atol=1e-6)


def test_averaging_constants_and_several_outputs():
    n = 20
    windows = uniform_closed_loop(n, 16, 4, 0)
    fused = WindowAverage(n, 2)
    for i, w in enumerate(windows):
        fused.add(w, [torch.full((len(w), 4, 1, 1), float(i + 1)), torch.full((len(w), 3), 7.0)])
    first, second = fused.average()
    # frames 0-7 and 12-15 are in both windows (mean 1.5), 8-11 only in the first (1), 16-19 only in the second (2)
    expected = torch.tensor([1.5] * 8 + [1.0] * 4 + [1.5] * 4 + [2.0] * 4)
    torch.testing.assert_close(first[:, 0, 0, 0], expected)
    torch.testing.assert_close(second, torch.full((n, 3), 7.0))


def test_averaging_divides_the_sums_in_place():
    """The averages are the running sums divided where they lie: no second clip-sized buffer per output."""
    windows = uniform_closed_loop(20, 16, 4, 0)
    fused = WindowAverage(20, 2)
    for w in windows:
        fused.add(w, [torch.ones(len(w), 4, 2, 2), torch.ones(len(w), 3)])
    storages = [s.data_ptr() for s in fused.sums]
    averaged = fused.average()
    assert [a.data_ptr() for a in averaged] == storages
    torch.testing.assert_close(averaged[0], torch.ones(20, 4, 2, 2), rtol=0, atol=0)
    assert fused.sums == [None, None]  # spent: the object no longer refers to the averages


def test_averaging_rejects_mismatches():
    windows = uniform_closed_loop(20)
    with pytest.raises(ValueError, match="expected 1"):
        WindowAverage(20, 1).add(windows[0], [torch.zeros(16, 1), torch.zeros(16, 1)])
    with pytest.raises(ValueError, match="does not fit"):
        WindowAverage(20, 1).add(windows[1], [torch.zeros(15, 1)])
    uncovered = WindowAverage(5, 1)
    uncovered.add(ContextWindow((0, 1, 2)), [torch.zeros(3, 1)])
    with pytest.raises(ValueError, match="covered by no window"):
        uncovered.average()
    with pytest.raises(ValueError, match="outside"):
        WindowAverage(5, 1).add(ContextWindow((0, 5)), [torch.zeros(2, 1)])


# -------------------------------------------------------------------------------------------------- offsets


def test_offsets_are_reproducible_in_range_and_seed_dependent():
    a = window_offsets(42, 25)
    assert a == window_offsets(42, 25)
    assert len(a) == 25 and all(0 <= o <= 15 for o in a)
    assert a != window_offsets(43, 25)
    assert window_offsets(42, 10) == a[:10]  # a prefix: the step count does not reshuffle earlier offsets
    assert set(window_offsets(0, 2000)) == set(range(16))  # the whole released range [0, length - 1] occurs
    assert all(0 <= o <= 7 for o in window_offsets(5, 100, length=8))
    assert window_offsets(2**64 - 1, 3) == window_offsets(2**64 - 1, 3)
    assert window_offsets(1, 0) == []


def test_offsets_are_not_the_noise_stream():
    # ComfyUI draws the initial noise from manual_seed(seed); the offsets must not simply replay that stream.
    seed = 42
    replay = torch.randint(0, 16, (25,), generator=torch.Generator().manual_seed(seed)).tolist()
    assert window_offsets(seed, 25) != replay


# ----------------------------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("num_frames", "length", "overlap", "match"),
    [
        (0, 16, 4, "at least 1 frame"),
        (-3, 16, 4, "at least 1 frame"),
        (20, MAX_WINDOW_LENGTH + 1, 4, "24 frames the motion modules"),
        (20, 0, 0, "window length must be at least 1"),
        (20, 16, 16, "overlap below the window length"),
        (20, 16, 20, "overlap below the window length"),
        (20, 16, -1, "cannot be negative"),
    ],
)
def test_bad_options_raise_clear_errors(num_frames, length, overlap, match):
    with pytest.raises(ValueError, match=match):
        validate_window_options(num_frames, length, overlap)
    for schedule in CONTEXT_SCHEDULES:
        with pytest.raises(ValueError, match=match):
            context_windows(num_frames, schedule, length, overlap)


def test_other_bad_input():
    with pytest.raises(ValueError, match="unknown context schedule"):
        context_windows(20, "looped")
    with pytest.raises(ValueError, match="offset cannot be negative"):
        uniform_closed_loop(20, offset=-1)
    with pytest.raises(ValueError, match="seed"):
        window_offsets(-1, 5)
    with pytest.raises(ValueError, match="steps"):
        window_offsets(0, -1)
    validate_window_options(1, 24, 23)  # the limits themselves are fine


def kept_by_definition(windows: list[ContextWindow]) -> int:
    """While each window runs: the frames some window up to it has seen that a later window needs again."""
    return max(
        len({f for w in windows[: i + 1] for f in w.frames} & {f for w in windows[i + 1 :] for f in w.frames})
        for i in range(len(windows))
    )


@pytest.mark.parametrize("num_frames", [17, 20, 28, 40, 52, 64, 100, 193])
@pytest.mark.parametrize("length,overlap", [(16, 4), (12, 6), (24, 8)])
def test_frames_kept_between_windows_is_the_worst_offsets_count(num_frames, length, overlap):
    expected = max(
        kept_by_definition(uniform_closed_loop(num_frames, length, overlap, offset)) for offset in range(length)
    )
    assert frames_kept_between_windows(num_frames, "uniform_closed_loop", length, overlap) == expected
    static = kept_by_definition(static_windows(num_frames, length, overlap))
    assert frames_kept_between_windows(num_frames, "static", length, overlap) == static


def test_frames_kept_between_windows_on_the_released_tiling():
    # one window keeps nothing; a length that is a multiple of the stride (12) keeps the 4 overlapping frames
    # and the 4 the last window wraps round to; static windows keep one overlap, more where the last window, moved
    # back to end on the last frame, overlaps the one before it further
    assert [frames_kept_between_windows(n) for n in (1, 7, 16)] == [0, 0, 0]
    assert {frames_kept_between_windows(n) for n in (60, 192, 600)} == {4 + 4}
    assert frames_kept_between_windows(40) == 4 + 12  # windows 0-15, 12-27, 24-39, 36-51: 0-11 wrap round
    assert frames_kept_between_windows(40, "static") == 4  # windows 0-15, 12-27, 24-39
    assert frames_kept_between_windows(600, "static") == 8  # ..., 576-591, 584-599
