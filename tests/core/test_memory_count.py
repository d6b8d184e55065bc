"""The tensor-by-tensor memory count of `benchmarks/memory_profile.py`, on tensors whose sizes are known exactly:
each storage an operation creates counts from its creation to its death, views, in-place and out= results
count nothing, and tensors made before the count (weights) never count."""

from __future__ import annotations

import gc
import importlib.util
from pathlib import Path

import pytest
import torch

PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "memory_profile.py"
MiB = 1 << 20


@pytest.fixture(scope="module")
def memory_profile():
    spec = importlib.util.spec_from_file_location("xdyna_memory_profile", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_new_storages_count_while_they_live(memory_profile):
    count = memory_profile.LiveTensorBytes()
    with count:
        a = torch.ones(MiB // 4)  # 1 MiB of float32
        b = a * 2  # 1 MiB
        c = torch.cat([a, b])  # 2 MiB
        assert (count.current, count.peak) == (4 * MiB, 4 * MiB)
        del a, c
        assert count.current == MiB and count.peak == 4 * MiB
        d = torch.zeros(MiB // 2, dtype=torch.float16)  # 1 MiB
        assert count.current == 2 * MiB and count.peak == 4 * MiB
        del b, d
    assert count.current == 0 and count.peak == 4 * MiB


def test_views_in_place_and_out_results_add_nothing(memory_profile):
    count = memory_profile.LiveTensorBytes()
    with count:
        a = torch.ones(64, MiB // 256)  # 1 MiB
        views = [a.view(-1), a[:3], a.t(), a.detach(), a.reshape(-1), a.select(0, 1)]
        a.mul_(3).add_(1)
        torch.add(a, 1, out=a)
        assert count.current == MiB and count.peak == MiB
        del a
        assert count.current == MiB  # the views keep the storage alive
        del views
        gc.collect()
    assert count.current == 0 and count.peak == MiB


def test_tensors_made_before_the_count_never_count(memory_profile):
    weight = torch.ones(MiB // 4)
    buffer = torch.ones(2, MiB // 8)
    count = memory_profile.LiveTensorBytes()
    with count:
        parts = [weight.detach(), weight[:10], buffer.t(), buffer[1]]
        weight.mul_(1)
        y = weight + 1  # a result: new
        assert count.current == MiB
        del parts, y
    assert count.current == 0 and count.peak == MiB


def test_weights_shared_by_two_modules_count_once(memory_profile):
    first = torch.nn.Linear(256, 256)  # 256*256 + 256 float32
    second = torch.nn.Sequential(torch.nn.Linear(256, 256), torch.nn.BatchNorm1d(256))
    second[0].weight = first.weight  # tied
    single = (256 * 256 + 256) * 4
    batch_norm = 2 * 256 * 4 + 2 * 256 * 4 + 8  # weight, bias; running mean, var; num_batches_tracked (int64)
    assert memory_profile.weight_bytes(first) == single
    assert memory_profile.weight_bytes(first, second) == single + 256 * 4 + batch_norm


def test_at_the_peak_the_live_bytes_are_given_by_the_line_that_made_them(memory_profile):
    count = memory_profile.LiveTensorBytes(sites=True)
    with count:
        small = torch.ones(MiB // 4)  # 1 MiB
        big = torch.cat([small, small, small])  # 3 MiB: the peak, 4 MiB, is reached here
        del big
        again = torch.ones(MiB // 8)  # 0.5 MiB: below the peak
    running, by_site = count.at_peak
    assert running.startswith("core/test_memory_count.py:") and running.endswith(
        " test_at_the_peak_the_live_bytes_are_given_by_the_line_that_made_them"
    )
    assert sorted(by_site.values()) == [MiB, 3 * MiB] and sum(by_site.values()) == count.peak
    assert by_site[running] == 3 * MiB  # the line that reached the peak made the 3 MiB
    del small, again
