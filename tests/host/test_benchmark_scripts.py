"""The benchmark scripts run here at small sizes, so they cannot rot unnoticed: the GPU check script
(`benchmarks/gpu_check.py`) in its smoke mode, so the one run a GPU session gets is not spent on a broken
script, the sampling benchmark with hints rendered a window at a time, and the MediaPipe lag benchmark on the
first 40 frames of the example clip. Every stage must print its line."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.host.conftest import COMFYUI_PATH

ROOT = Path(__file__).resolve().parents[2]


def run_benchmark(script: str, *args: str) -> str:
    env = dict(os.environ, COMFYUI_PATH=str(COMFYUI_PATH))
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout + done.stderr[-4000:]
    return done.stdout


def test_the_sampling_benchmark_counts_the_work_with_rendered_hints():
    out = run_benchmark(
        "sampling.py", "--frames", "16", "20", "--steps", "1", "--hints", "render", "--attention", "pytorch"
    )
    assert ", attention_pytorch, on " in out.splitlines()[0], out  # ComfyUI's --use-pytorch-cross-attention
    # frames, s/step, host MiB, GPU MiB ("-" without CUDA), UNet frames and released, ControlNet frames and released
    rows = re.findall(r"^\s+(\d+)\s+[\d.]+\s+(-?[\d.]+)\s+(-|[\d.]+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)$", out, re.M)
    assert [row[0] for row in rows] == ["16", "20"], out
    for _, host, gpu, unet, released_unet, controlnet, released_controlnet in rows:
        assert float(host) > 0 and (gpu == "-") == (not torch.cuda.is_available()), out
        assert unet == released_unet, out  # every UNet frame-evaluation of the release is made
        assert 0 < int(controlnet) < int(released_controlnet), out  # ControlNets shared by branches and windows
    assert re.search(r"^host peak at 20 frames / at 16: [\d.]+$", out, re.M), out


def test_the_gpu_check_script_runs_end_to_end_in_smoke_mode():
    out = run_benchmark("gpu_check.py", "--smoke")
    assert "gpu_check: ok" in out
    for precision in ("fp16", "bf16"):
        call = re.search(rf"^{precision}: one UNet call .* max \|diff\| (\S+) \(of (\S+)\)$", out, re.M)
        assert call, out
        diff, scale = float(call.group(1)), float(call.group(2))
        assert 0 < diff < 0.05 * scale, call.group(0)  # half precision differs from fp32, but only by rounding
        runs = re.findall(
            rf"^{precision}: (\d+) frames, 2 steps: .* \(host RSS [+-]\d+ MiB\), UNet frames (\d+) \(released (\d+)\)",
            out,
            re.M,
        )
        lengths = ["16", "20", "24"] if precision == "fp16" else ["16", "20"]  # the long-video case in fp16 only
        assert [frames for frames, _, _ in runs] == lengths, out
        for _, ours, released in runs:
            assert int(ours) == int(released), out  # the same UNet work as the release: no frame skipped
        plans = re.findall(
            rf"^{precision}: (\d+) frames: ComfyUI plans ([\d.]+) GiB for a window call of both branches \(([\d.]+) "
            rf"for one\), memory_usage_factor ([\d.]+); weights loaded ([\d.]+) GiB$",
            out,
            re.M,
        )
        assert [frames for frames, *_ in plans] == lengths, out
        for _, both, one, _, _ in plans:  # a window of 16 frames and the reference, whatever the video's length
            assert float(one) > 0 and abs(float(both) - 2 * float(one)) <= 0.011, out
        assert plans[0][1:] == plans[1][1:], out
    prep = dict(re.findall(r"^hint preparation, (.+): ([\d.]+) ms/frame$", out, re.M))
    assert set(prep) == {
        f"{net} ControlNet, {kind}" for net in ("pose", "S-Face") for kind in ("rendered", "IMAGE tensor")
    } | {"S-Face ControlNet, placed"}
    assert all(float(ms) > 0 for ms in prep.values()), out
    offload = re.search(r"^fp16: X-Dyna weights half offloaded vs fully loaded: max \|diff\| (\S+)$", out, re.M)
    assert offload and float(offload.group(1)) == 0.0, out


def test_the_gpu_check_script_skips_what_would_start_past_its_deadline_and_still_ends_well():
    out = run_benchmark("gpu_check.py", "--smoke", "--deadline", "0")
    assert "gpu_check: ok" in out
    assert re.findall(r"^(\w+): skipped, past the 0 s budget$", out, re.M) == ["bf16", "fp16"], out
    assert " frames, 2 steps: " not in out, out  # no sampling run started
    assert re.search(r"^hint preparation, pose ControlNet, rendered: [\d.]+ ms/frame$", out, re.M), out


def test_the_hint_preparation_benchmark_times_every_kind_with_footage_of_another_size():
    out = run_benchmark("hint_prep.py", "--width", "64", "--height", "96", "--frames", "4", "--driving", "80x48")
    assert out.startswith("X-Dyna hint preparation at 64x96, driving 80x48, 4 frames a call"), out
    rows = dict(re.findall(r"^\s*(.+ControlNet, .+):\s+([\d.]+) ms/frame$", out, re.M))
    assert set(rows) == {
        f"{net} ControlNet, {kind}" for net in ("pose", "S-Face") for kind in ("rendered", "IMAGE tensor")
    } | {"S-Face ControlNet, placed"}
    assert all(float(ms) > 0 for ms in rows.values()), out


def test_the_mediapipe_lag_benchmark_measures_each_group(shared_data):
    pytest.importorskip("mediapipe.python.solutions", reason="mediapipe 0.10.x (≤ 0.10.21) not installed")
    out = run_benchmark("mediapipe_lag.py", "--frames", "40", str(shared_data / "driving_1.mp4"))
    assert "40 frames at 8 fps" in out, out
    rows = dict(re.findall(r"^\s+(body \(joints 0-13\)|nose|wrists|face \(68 landmarks\))\s+(-?[\d.]+)\s", out, re.M))
    assert set(rows) == {"body (joints 0-13)", "nose", "wrists", "face (68 landmarks)"}, out
    assert all(-1.0 <= float(shift) <= 3.0 for shift in rows.values()), out  # within the shifts searched


def test_the_memory_profile_counts_a_window_call_and_the_run_leaves_nothing_alive():
    runs = {}
    for branches in ("batched", "split"):
        out = run_benchmark("memory_profile.py", "--branches", branches, "--sites", "5")
        labels = ("UNet call batch", "weights", "peak of the tensors the run created", "weights + that peak")
        figures = {
            label: re.search(rf"^{re.escape(label)}(?: \(frames, reference included\))?: ([\d.]+)", out, re.M)
            for label in (*labels, "still alive after the run")
        }
        assert all(figures.values()), out
        figures = {label: found.group(1) for label, found in figures.items()}
        plan = re.search(
            r"^ComfyUI's plan for the call on a CUDA GPU: ([\d.]+) MiB .*measured / planned: ([\d.]+)$", out, re.M
        )
        assert plan, out
        runs[branches] = {k: float(v) for k, v in figures.items()} | {"plan": float(plan.group(1))}
        assert re.search(r"^at the peak, running \S+\.py:\d+ \S+; the lines that made what was alive:$", out, re.M), out
        sites = [float(mib) for mib in re.findall(r"^ +([\d.]+) MiB  \S+\.py:\d+ \S+$", out, re.M)]
        assert len(sites) == 5 and sites == sorted(sites, reverse=True), out
        assert sum(sites) <= runs[branches]["peak of the tensors the run created"] + 0.1, out
    batched, split = runs["batched"], runs["split"]
    assert (batched["UNet call batch"], split["UNet call batch"]) == (34, 17)  # 16 frames + the reference, x2 or x1
    assert batched["weights"] == split["weights"] > 0
    assert batched["peak of the tensors the run created"] > split["peak of the tensors the run created"] > 0
    assert batched["plan"] == pytest.approx(2 * split["plan"], abs=0.11)
    for run in runs.values():
        assert run["weights + that peak"] == pytest.approx(
            run["weights"] + run["peak of the tensors the run created"], abs=0.11
        )
        assert run["still alive after the run"] == 0.0  # a finished run holds no tensor it made (nothing leaks)
