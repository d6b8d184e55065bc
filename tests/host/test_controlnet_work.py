"""ControlNet work: each frame's residuals once per step, shared by CFG branches with equal contexts.

Output equality with the per-window, per-branch computation is shown by the whole-run parity tests
(test_sampling_parity.py) and by core's Apply ControlNet giving the same video as ours (test_controlnets.py);
these tests count the work and check the cache's bounds and fallbacks.
"""

from __future__ import annotations

import logging

import pytest
import torch

from tests.fixtures.official_layout import TINY_UNET
from tests.host.support_nodes import TinyControlNet
from tests.host.xdyna_setup import (
    PRECISION_TIERS,
    apply_controlnets,
    device_computes_in,
    pack,
    random_reference,
    tiny_xdyna,
)

H, W, STEPS = 4, 6, 3


@pytest.fixture(scope="module")
def setup(comfy_host):
    TinyControlNet.glue = pack(comfy_host, "xdyna_comfy.loaders")
    tiny = tiny_xdyna(comfy_host, seed=13, residual_gain=0.1, output_gain=0.1)
    reference = random_reference(comfy_host, TINY_UNET, H, W, seed=3)
    model = (
        pack(comfy_host, "nodes.model_nodes")
        .XDynaApplyDynamicsAdapter.execute(tiny.model, tiny.weights, reference, 1.0)
        .args[0]
    )
    return model, reference


@pytest.fixture
def counted(monkeypatch):
    """Frames each ControlNet network evaluates, by network."""
    import comfy.cldm.cldm

    counts: dict[int, int] = {}
    real = comfy.cldm.cldm.ControlNet.forward

    def forward(self, x, *args, **kwargs):
        counts[id(self)] = counts.get(id(self), 0) + x.shape[0]
        return real(self, x, *args, **kwargs)

    monkeypatch.setattr(comfy.cldm.cldm.ControlNet, "forward", forward)
    return counts


def text(seed):
    return torch.randn(1, 77, 32, generator=torch.Generator().manual_seed(seed))


def controls(comfy_host, frames, positive_text, negative_text, core=False):
    gen = torch.Generator().manual_seed(frames)
    pose = TinyControlNet().load(1, 3)[0]
    face = TinyControlNet().load(2, 6)[0]
    positive, negative = [[positive_text, {}]], [[negative_text, {}]]
    pose_hints = torch.rand(frames, H * 8, W * 8, 3, generator=gen)
    face_hints = torch.rand(frames, H * 8, W * 8, 6, generator=gen)
    if core:
        import nodes as core_nodes

        apply = core_nodes.ControlNetApplyAdvanced().apply_controlnet
        positive, negative = apply(positive, negative, pose, pose_hints, 1.0, 0.0, 1.0)
        positive, negative = apply(positive, negative, face, face_hints, 1.0, 0.0, 1.0)
        return positive, negative
    return apply_controlnets(
        comfy_host,
        positive,
        negative,
        pose_controlnet=pose,
        pose_images=pose_hints,
        face_controlnet=face,
        face_condition=face_hints,
    )


def sample(comfy_host, setup, frames, conditioning, seed=5):
    model, reference = setup
    sampler = pack(comfy_host, "nodes.sampling_nodes").XDynaTemporalSampler
    args = (model, *conditioning, reference, frames, seed, STEPS, 7.5, "ddim", "xdyna_ddim", 16, 4)
    return sampler.execute(*args, "uniform_closed_loop", 1.0).args[0]["samples"]


@pytest.mark.parametrize("frames", [7, 40])
@pytest.mark.parametrize("core", [False, True], ids=["ours", "core-apply-controlnet"])
def test_each_frame_once_per_step_when_both_branches_see_the_same_context(comfy_host, setup, counted, frames, core):
    same = text(1)
    sample(comfy_host, setup, frames, controls(comfy_host, frames, same, same.clone(), core=core))
    assert sorted(counted.values()) == [frames * STEPS] * 2  # pose and S-Face: N frames x steps, not windows x 16 x 2


def test_branches_with_different_prompts_each_get_their_own_evaluation(comfy_host, setup, counted):
    frames = 40
    sample(comfy_host, setup, frames, controls(comfy_host, frames, text(1), text(2)))
    assert sorted(counted.values()) == [2 * frames * STEPS] * 2


@pytest.fixture
def split_branches(comfy_host, monkeypatch):
    """Core told there is no free memory, so it runs the CFG branches in UNet calls of their own; records the
    number of condition chunks each ControlNet call serves and the cache size after each."""
    import comfy.model_patcher

    controlnet_patch = pack(comfy_host, "xdyna_comfy.controlnets")
    chunks, sizes = [], []
    real_get, real_keep = controlnet_patch.XDynaControlNet.get_control, controlnet_patch.XDynaControlNet._keep

    def get_control(self, x_noisy, t, cond, batched_number, transformer_options):
        chunks.append(batched_number)
        return real_get(self, x_noisy, t, cond, batched_number, transformer_options)

    def keep(self, *args):
        real_keep(self, *args)
        sizes.append(len(self._cache))

    def split():
        monkeypatch.setattr(comfy.model_patcher.ModelPatcher, "get_free_memory", lambda self, device: 0)
        monkeypatch.setattr(controlnet_patch.XDynaControlNet, "get_control", get_control)
        monkeypatch.setattr(controlnet_patch.XDynaControlNet, "_keep", keep)
        return chunks, sizes

    return split


@pytest.mark.parametrize("frames", [7, 40])
def test_branches_core_runs_one_after_the_other_still_share_one_evaluation(
    comfy_host, setup, counted, split_branches, frames
):
    same = text(1)
    batched = sample(comfy_host, setup, frames, controls(comfy_host, frames, same, same.clone()))
    chunks, sizes = split_branches()
    context_windows = pack(comfy_host, "xdyna_comfy.context_windows")
    with pytest.MonkeyPatch.context() as unshared:  # each branch's call computes its own residuals
        unshared.setattr(context_windows, "control_uses", lambda conds: {})
        counted.clear()
        alone = sample(comfy_host, setup, frames, controls(comfy_host, frames, same, same.clone()))
        assert sorted(counted.values()) == [2 * frames * STEPS] * 2
    counted.clear()
    sizes.clear()
    apart = sample(comfy_host, setup, frames, controls(comfy_host, frames, same, same.clone()))
    assert chunks and set(chunks) == {1}  # every call served one branch: core did split them
    assert sorted(counted.values()) == [frames * STEPS] * 2
    torch.testing.assert_close(apart, alone, rtol=0, atol=0)  # the same residuals, computed once
    torch.testing.assert_close(apart, batched, rtol=1e-4, atol=1e-4)  # UNet batch of 1 or 2: fp32 rounding
    # held for the branch still due: at most this window's frames on top of those later windows need
    assert max(sizes) <= min(frames, 16) + (16 if frames > 16 else 0) and sizes[-1] == 0


def test_split_branches_with_different_prompts_each_get_their_own_evaluation(
    comfy_host, setup, counted, split_branches
):
    frames = 40
    split_branches()
    sample(comfy_host, setup, frames, controls(comfy_host, frames, text(1), text(2)))
    assert sorted(counted.values()) == [2 * frames * STEPS] * 2


def test_the_released_schedule_would_evaluate_every_window_frame_of_both_branches(comfy_host):
    """The saving, from the window plan: 40 frames is 4 windows of 16 (closed loop), both branches, per step."""
    windows = pack(comfy_host, "xdyna_core.windows")
    plan = windows.context_windows(40, "uniform_closed_loop", 16, 4, 0)
    assert 2 * sum(len(w) for w in plan) == 128 and len(plan) == 4  # against 40 with sharing and reuse


@pytest.fixture
def cache_sizes(comfy_host, monkeypatch):
    """After each window's residuals are kept: (frames in the cache, its bytes, id of the ControlNet object)."""
    controlnet_patch = pack(comfy_host, "xdyna_comfy.controlnets")
    sizes = []
    real_keep = controlnet_patch.XDynaControlNet._keep

    def keep(self, *args):
        real_keep(self, *args)
        values = [v for r in self._cache.values() for v in controlnet_patch._values(r)]
        sizes.append((len(self._cache), sum(v.numel() * v.element_size() for v in values), id(self)))

    monkeypatch.setattr(controlnet_patch.XDynaControlNet, "_keep", keep)
    return sizes


def test_cache_holds_only_frames_still_needed(comfy_host, setup, cache_sizes, counted):
    frames, same = 40, text(1)
    sample(comfy_host, setup, frames, controls(comfy_host, frames, same, same.clone()))
    # what the window plan makes necessary: frames seen by an earlier window and needed by a later one (for 40
    # frames, 4 shared with the next window and 12 that the last window wraps round to); 8 when N is a multiple of 12
    windows = pack(comfy_host, "xdyna_core.windows").context_windows(frames, "uniform_closed_loop", 16, 4, 0)
    first = {f: min(i for i, w in enumerate(windows) if f in w.frames) for f in range(frames)}
    last = {f: max(i for i, w in enumerate(windows) if f in w.frames) for f in range(frames)}
    needed = max(sum(first[f] <= i < last[f] for f in range(frames)) for i in range(len(windows)))
    held = [count for count, *_ in cache_sizes]
    assert needed == 16 and max(held) == needed and held[-1] == 0
    assert sorted(counted.values()) == [frames * STEPS] * 2


def test_past_its_budget_the_cache_moves_to_the_offload_device(comfy_host, setup, monkeypatch, caplog, counted):
    controlnet_patch = pack(comfy_host, "xdyna_comfy.controlnets")
    frames, same = 40, text(1)
    expected = sample(comfy_host, setup, frames, controls(comfy_host, frames, same, same.clone()))
    moved_to = []

    def spill_target(self, device):  # a CPU host has no second device: the CPU stands in for the offload device
        moved_to.append(device)
        return torch.device("cpu")

    monkeypatch.setattr(controlnet_patch, "CACHE_BUDGET_BYTES", 1)
    monkeypatch.setattr(controlnet_patch.XDynaControlNet, "_spill_target", spill_target)
    counted.clear()
    with caplog.at_level(logging.INFO, logger="xdyna"):
        spilled = sample(comfy_host, setup, frames, controls(comfy_host, frames, same, same.clone()))
    assert moved_to and any("holding them on cpu" in r.getMessage() for r in caplog.records)
    # the chain's merged cache: the message names both ControlNets, once a run (not once a step)
    assert [r.getMessage().split(" residuals")[0] for r in caplog.records if "holding them" in r.getMessage()] == [
        "X-Dyna: pose ControlNet and S-Face ControlNet"
    ]
    assert sorted(counted.values()) == [frames * STEPS] * 2  # nothing recomputed
    torch.testing.assert_close(spilled, expected, rtol=0, atol=0)


@pytest.mark.parametrize("budget_frames", [0, 3])
def test_past_its_budget_with_nowhere_to_move_the_cache_holds_what_fits_and_recomputes_the_rest(
    comfy_host, setup, monkeypatch, caplog, counted, cache_sizes, budget_frames
):
    """On the CPU (or `--gpu-only`) the offload device is the compute device: frames needed last are dropped
    and computed again by the window that needs them."""
    controlnet_patch = pack(comfy_host, "xdyna_comfy.controlnets")
    frames, same = 40, text(1)
    expected = sample(comfy_host, setup, frames, controls(comfy_host, frames, same, same.clone()))
    frame_bytes = max(nbytes // count for count, nbytes, _ in cache_sizes if count)
    cache_sizes.clear()
    counted.clear()
    monkeypatch.setattr(controlnet_patch, "CACHE_BUDGET_BYTES", max(1, budget_frames * frame_bytes))
    with caplog.at_level(logging.INFO, logger="xdyna"):
        recomputed = sample(comfy_host, setup, frames, controls(comfy_host, frames, same, same.clone()))
    assert sum("recomputing frames past the budget" in r.getMessage() for r in caplog.records) == 1  # once a run
    assert max(count for count, *_ in cache_sizes) == budget_frames
    assert max(nbytes for _, nbytes, _ in cache_sizes) <= max(1, budget_frames * frame_bytes)
    windows = pack(comfy_host, "xdyna_core.windows").context_windows(frames, "uniform_closed_loop", 16, 4, 0)
    every_window = STEPS * sum(len(w) for w in windows)  # 40 frames: 4 windows of 16 at every offset
    evaluations = sorted(counted.values())
    if budget_frames == 0:  # nothing held: each window computes all its frames (still once for both branches)
        assert evaluations == [every_window] * 2
    else:  # the 3 frames needed soonest are held: less than every window's frames, more than each frame once
        assert all(frames * STEPS < n < every_window for n in evaluations)
    # the same residuals from a ControlNet batch of another composition: equal up to fp32 rounding
    torch.testing.assert_close(recomputed, expected, rtol=1e-5, atol=1e-5)


@pytest.fixture
def unfused(comfy_host, monkeypatch):
    """Each ControlNet of a chain computes, caches and merges its own residuals (the path taken when a core
    control, T2I adapter or ControlLoRA sits in the chain): the reference the fused chain must equal."""
    controlnet_patch = pack(comfy_host, "xdyna_comfy.controlnets")

    def use():
        monkeypatch.setattr(controlnet_patch.XDynaControlNet, "_fuses_chain", lambda self: False)

    return use


def test_a_chain_of_xdyna_controlnets_holds_one_merged_residual_set_per_frame(
    comfy_host, setup, counted, unfused, cache_sizes
):
    """Pose and S-Face: the outer ControlNet caches their sum, so the cache between windows is half as big."""
    frames, same = 40, text(1)
    fused = sample(comfy_host, setup, frames, controls(comfy_host, frames, same, same.clone()))
    fused_held, fused_counts = list(cache_sizes), sorted(counted.values())
    cache_sizes.clear()
    counted.clear()
    unfused()
    apart = sample(comfy_host, setup, frames, controls(comfy_host, frames, same, same.clone()))
    assert fused_counts == sorted(counted.values()) == [frames * STEPS] * 2  # the same work
    torch.testing.assert_close(fused, apart, rtol=0, atol=0)  # the same sums, in the same order
    assert len({owner for *_, owner in fused_held}) == 1  # only the chain's head keeps residuals
    assert len({owner for *_, owner in cache_sizes}) == 2  # unfused: pose and S-Face each keep theirs

    def frame_bytes(held):
        return {nbytes // count for count, nbytes, _ in held if count}

    # the tiny pose and S-Face networks have the same residual shapes: one frame of the merged set is one of each
    assert frame_bytes(fused_held) == frame_bytes(cache_sizes) and len(frame_bytes(fused_held)) == 1
    assert max(count for count, *_ in fused_held) == max(count for count, *_ in cache_sizes) == 16


@pytest.mark.parametrize(
    "settings",
    [
        dict(pose_strength=0.7, face_strength=1.3),
        dict(pose_start=0.2, face_end=0.5),  # first step S-Face only, last step pose only (3 steps)
        dict(pose_start=0.9, face_start=0.9),  # no ControlNet in range at the early steps
    ],
    ids=["strengths", "ranges", "late-start"],
)
def test_fused_chain_gives_each_controlnets_strength_and_range_bit_for_bit(
    comfy_host, setup, counted, unfused, settings
):
    frames, same = 24, text(1)
    gen = torch.Generator().manual_seed(frames)
    pose_hints = torch.rand(frames, H * 8, W * 8, 3, generator=gen)
    face_hints = torch.rand(frames, H * 8, W * 8, 6, generator=gen)

    def run(**inputs):
        counted.clear()
        conditioning = apply_controlnets(
            comfy_host,
            [[same, {}]],
            [[same.clone(), {}]],
            pose_controlnet=TinyControlNet().load(1, 3)[0],
            pose_images=pose_hints,
            face_controlnet=TinyControlNet().load(2, 6)[0],
            face_condition=face_hints,
            **inputs,
        )
        return sample(comfy_host, setup, frames, conditioning), sorted(counted.values())

    released, _ = run()
    fused, fused_counts = run(**settings)
    unfused()
    apart, apart_counts = run(**settings)
    assert fused_counts == apart_counts  # a ControlNet out of range is not evaluated, fused or not
    torch.testing.assert_close(fused, apart, rtol=0, atol=0)
    assert not torch.allclose(fused, released, rtol=1e-3, atol=1e-3)  # the settings do change the video


def test_a_chain_with_another_kind_of_control_is_not_fused(comfy_host, setup):
    """A core T2I adapter (or ControlLoRA, or a ControlNet the pack cannot adopt) below an X-Dyna ControlNet
    keeps core's per-link computing and merging; a chain of X-Dyna ControlNets fuses."""
    import comfy.controlnet

    controlnet_patch = pack(comfy_host, "xdyna_comfy.controlnets")
    hints = pack(comfy_host, "xdyna_core.hints").TensorHintFrames(torch.rand(2, H * 8, W * 8, 3))
    pose = controlnet_patch.XDynaControlNet.adopt(TinyControlNet().load(1, 3)[0], hints)
    face = controlnet_patch.XDynaControlNet.adopt(TinyControlNet().load(2, 3)[0], hints)
    face.previous_controlnet = pose
    assert face._fuses_chain() and pose._fuses_chain()
    adapter = comfy.controlnet.T2IAdapter(torch.nn.Identity(), 3, 8, "nearest-exact", "cpu")
    pose.previous_controlnet = adapter
    assert not face._fuses_chain() and not pose._fuses_chain()


@pytest.mark.parametrize("prompts", ["same", "different", "split"])
def test_the_xdyna_call_holds_one_residual_set_per_evaluation_and_adds_it_to_the_frame_rows(
    comfy_host, setup, monkeypatch, split_branches, prompts
):
    """A fused chain hands the X-Dyna UNet call its residuals per CFG chunk (`ChunkResiduals`): branches that
    share an evaluation share one set, nothing is padded for the reference frames, and the call adds each
    output residual to the frame rows of the skip connection where core would: the same video, bit for bit,
    as the residuals joined along the batch and padded with zeros for core's `apply_control`."""
    import comfy.ldm.modules.diffusionmodules.openaimodel as openaimodel

    controlnet_patch = pack(comfy_host, "xdyna_comfy.controlnets")
    model_patch = pack(comfy_host, "xdyna_comfy.model_patch")
    frames = 24
    positive, negative = text(1), text(2) if prompts == "different" else text(1)
    if prompts == "split":
        split_branches()
    sets, applied = [], []
    real_chunk_control, real_apply = model_patch._chunk_control, openaimodel.apply_control

    def chunk_control(control, chunks):
        sets.append((chunks, len({id(r) for r in control.chunks}), control.chunks[0]["output"][0].shape[0]))
        return real_chunk_control(control, chunks)

    def apply_control(h, control, name):
        if name == "output":
            applied.append(bool(control and control.get("output")))
        return real_apply(h, control, name)

    monkeypatch.setattr(model_patch, "_chunk_control", chunk_control)
    monkeypatch.setattr(openaimodel, "apply_control", apply_control)
    by_chunk = sample(comfy_host, setup, frames, controls(comfy_host, frames, positive, negative.clone()))
    chunks = {"same": 2, "different": 2, "split": 1}[prompts]
    shared = {"same": 1, "different": 2, "split": 1}[prompts]
    assert sets and set(sets) == {(chunks, shared, 16)}  # 16 window frames a set: no reference rows
    assert applied and not any(applied)  # core's apply_control adds no output residual

    monkeypatch.setattr(controlnet_patch, "CHUNK_RESIDUALS", "xdyna_test_unset")  # residuals joined and padded
    sets.clear()
    applied.clear()
    joined = sample(comfy_host, setup, frames, controls(comfy_host, frames, positive, negative.clone()))
    assert not sets and applied and all(applied)
    torch.testing.assert_close(by_chunk, joined, rtol=0, atol=0)


# --- the memory plan: what ComfyUI frees for the residuals kept between windows --------------------------------


@pytest.mark.parametrize("latent", [(H, W), (5, 7), (9, 3)], ids=["4x6", "5x7", "9x3"])
@pytest.mark.parametrize("tier", ["fp32", *PRECISION_TIERS])
def test_one_frames_residual_bytes_are_counted_from_the_network(comfy_host, setup, latent, tier):
    """What one frame's residuals take, from the network's blocks, against the outputs of a real evaluation in the
    dtype the device computes in (half precision as on a GPU, or cast); odd latent sizes: each downsampling
    block halves the resolution rounding up, as its stride-2 convolution does."""
    controlnet_patch = pack(comfy_host, "xdyna_comfy.controlnets")
    storage, compute = PRECISION_TIERS.get(tier, ("fp32", torch.float32))
    hints = pack(comfy_host, "xdyna_core.hints").TensorHintFrames(torch.rand(1, latent[0] * 8, latent[1] * 8, 3))
    with device_computes_in(compute):
        control = controlnet_patch.XDynaControlNet.adopt(TinyControlNet().load(1, 3, storage)[0], hints)
    model = control.control_model
    out = model(
        x=torch.randn(1, 4, *latent, dtype=compute),
        hint=torch.rand(1, 3, latent[0] * 8, latent[1] * 8, dtype=compute),
        timesteps=torch.tensor([500.0], dtype=compute),
        context=torch.randn(1, 77, 32, dtype=compute),
    )
    found = [v for layers in out.values() for v in layers if v is not None]
    assert len(out["output"]) == len(model.input_blocks) > 1 and {v.dtype for v in found} == {compute}
    assert control.residual_bytes(latent) == sum(v.numel() * v.element_size() for v in found)


def test_a_real_size_frame_of_residuals_at_512x896_is_23_5_mb_in_fp16(comfy_host, setup):
    """The SD1.5 ControlNet of the real file layout (uninitialised weights: only the blocks count): 320 channels
    ×3 at 64×112, 320 + 640×2 at 32×56, 640 + 1280×2 at 16×28, 1280×3 at 8×14 and the middle 1280 at 8×14."""
    from tests.fixtures.official_layout import SD15_UNET, controlnet_key_shapes

    controlnet_patch = pack(comfy_host, "xdyna_comfy.controlnets")
    loaders = pack(comfy_host, "xdyna_comfy.loaders")
    sd = {k: torch.empty(shape, dtype=torch.float16) for k, shape in controlnet_key_shapes(SD15_UNET, 3).items()}
    hints = pack(comfy_host, "xdyna_core.hints").TensorHintFrames(torch.rand(1, 896, 512, 3))
    with device_computes_in(torch.float16):
        control = controlnet_patch.XDynaControlNet.adopt(loaders.build_sd15_controlnet(sd, "fp16"), hints)
    del sd
    elements = 64 * 112 * 320 * 3 + 32 * 56 * (320 + 640 * 2) + 16 * 28 * (640 + 1280 * 2) + 8 * 14 * 1280 * 4
    assert control.residual_bytes((112, 64)) == 2 * elements == 23_511_040


@pytest.fixture
def plans(comfy_host, monkeypatch):
    """The `memory_required` ComfyUI's sampler hands the memory manager, one per run."""
    import comfy.model_management

    planned = []
    real = comfy.model_management.load_models_gpu

    def load_models_gpu(models, memory_required=0, *args, **kwargs):
        planned.append(memory_required)
        return real(models, memory_required, *args, **kwargs)

    monkeypatch.setattr(comfy.model_management, "load_models_gpu", load_models_gpu)
    return planned


@pytest.mark.parametrize("core", [False, True], ids=["ours", "core-apply-controlnet"])
@pytest.mark.parametrize("prompts", ["same", "different"])
def test_the_memory_plan_holds_the_residuals_kept_between_windows(comfy_host, setup, plans, cache_sizes, prompts, core):
    """A 40-frame clip keeps up to 16 frames' residuals between windows (4 shared with the next window and 12 the
    last wraps round to), once per sharing group; a one-window clip keeps none. The plan for both is one window's
    UNet call, so the difference is the cache, and it is what the run held at its largest."""
    controlnet_patch = pack(comfy_host, "xdyna_comfy.controlnets")
    positive, negative = text(1), text(2) if prompts == "different" else text(1)
    sample(comfy_host, setup, 16, controls(comfy_host, 16, positive, negative.clone(), core=core))
    assert not any(count for count, *_ in cache_sizes)
    conditioning = controls(comfy_host, 40, positive, negative.clone(), core=core)
    head = conditioning[0][0][1]["control"]
    sample(comfy_host, setup, 40, conditioning)
    one_window, clip = plans
    frame_bytes = {nbytes // count for count, nbytes, _ in cache_sizes if count}
    groups = {"same": 1, "different": 2}[prompts]
    assert len(frame_bytes) == 1 and max(count for count, *_ in cache_sizes) == 16 * groups
    assert clip - one_window == 16 * groups * frame_bytes.pop() == max(nbytes for _, nbytes, _ in cache_sizes)
    # the plan is the run's: the ControlNets the user's conditioning holds forget it when the run ends
    assert all(getattr(c, "planned_cache_bytes", 0) == 0 for c in controlnet_patch.controls_in([[{"control": head}]]))


def test_only_the_links_that_keep_residuals_plan_for_them(comfy_host, setup):
    """A chain's head that fuses plans for the merged set; below a core control (here a T2I adapter, which core
    runs link by link) the X-Dyna links that fuse plan for theirs; entries with equal contexts share."""
    import comfy.controlnet

    controlnet_patch = pack(comfy_host, "xdyna_comfy.controlnets")
    hints = pack(comfy_host, "xdyna_core.hints").TensorHintFrames(torch.rand(2, H * 8, W * 8, 3))
    pose = controlnet_patch.XDynaControlNet.adopt(TinyControlNet().load(1, 3)[0], hints)
    face = controlnet_patch.XDynaControlNet.adopt(TinyControlNet().load(2, 3)[0], hints)
    face.previous_controlnet = pose
    frame = pose.residual_bytes((H, W))

    def planned(head, *contexts):
        conds = {"positive": [{"control": head, "cross_attn": c} for c in contexts]}
        total = controlnet_patch.plan_residual_cache(conds, (H, W), 8)
        return total, face.planned_cache_bytes, pose.planned_cache_bytes

    assert planned(face, text(1), text(1)) == (8 * frame, 8 * frame, 0)
    assert planned(face, text(1), text(2)) == (16 * frame, 16 * frame, 0)
    adapter = comfy.controlnet.T2IAdapter(torch.nn.Identity(), 3, 8, "nearest-exact", "cpu")
    adapter.set_previous_controlnet(face)
    assert planned(adapter, text(1)) == (8 * frame, 8 * frame, 0)
    pose.previous_controlnet = comfy.controlnet.T2IAdapter(torch.nn.Identity(), 3, 8, "nearest-exact", "cpu")
    assert planned(face, text(1)) == (16 * frame, 8 * frame, 8 * frame)  # unfused: each keeps its own


def test_a_chain_is_walked_head_first_each_link_once_also_when_it_loops(comfy_host):
    """`chain_of` (what fusing, adoption and the conditioning scan walk): head first down `previous_controlnet`;
    a chain that loops back (a graph wired in a circle) stops at the first link seen again."""
    import comfy.controlnet

    controlnet_patch = pack(comfy_host, "xdyna_comfy.controlnets")
    first, second, third = (
        comfy.controlnet.T2IAdapter(torch.nn.Identity(), 3, 8, "nearest-exact", "cpu") for _ in "abc"
    )
    third.set_previous_controlnet(second.set_previous_controlnet(first))
    assert controlnet_patch.chain_of(third) == [third, second, first] and controlnet_patch.chain_of(None) == []
    first.previous_controlnet = third
    assert controlnet_patch.chain_of(second) == [second, first, third]
    found = controlnet_patch.controls_in([[{"control": third}, {"control": first}, {}]])
    assert len(found) == 3 and {id(c) for c in found} == {id(first), id(second), id(third)}


def test_a_chain_of_core_controlnets_that_loops_is_adopted_link_for_link(comfy_host, setup):
    """Adoption walks a core chain once: each link becomes one XDynaControlNet, shared by every condition that
    holds it, and a chain wired back onto itself stays the same loop of adopted links (no endless recursion)."""
    controlnet_patch = pack(comfy_host, "xdyna_comfy.controlnets")
    hints = torch.rand(2, H * 8, W * 8, 3, generator=torch.Generator().manual_seed(4)).movedim(-1, 1)
    first, second = (TinyControlNet().load(seed, 3)[0].copy().set_cond_hint(hints) for seed in (1, 2))
    second.set_previous_controlnet(first)
    first.previous_controlnet = second
    conds = {"positive": [{"control": second}], "negative": [{"control": first}, {}]}
    controlnet_patch.adopt_controls(conds)
    head, other = conds["positive"][0]["control"], conds["negative"][0]["control"]
    assert all(isinstance(c, controlnet_patch.XDynaControlNet) for c in (head, other))
    assert head.previous_controlnet is other and other.previous_controlnet is head
    assert head.control_model is second.control_model and other.control_model is first.control_model
    assert second.previous_controlnet is first and first.previous_controlnet is second  # the user's chain as it was
    assert "control" not in conds["negative"][1]


def test_a_core_controlnet_below_the_xdyna_ones_is_adopted_into_their_fused_chain(
    comfy_host, setup, counted, monkeypatch
):
    """A core ControlNet applied before X-Dyna Apply ControlNets (a third ControlNet under pose and S-Face): the
    run's chain is rebuilt from new links, the X-Dyna ones copied, so all three fuse and each network evaluates
    each frame once per step; the video is the one the unadopted chain gives (core's per-window, per-branch
    computing below X-Dyna links that each cache their own), and the user's objects keep their chain."""
    import comfy.controlnet
    import nodes as core_nodes

    frames = 40
    controlnet_patch, model_patch = (
        pack(comfy_host, m) for m in ("xdyna_comfy.controlnets", "xdyna_comfy.model_patch")
    )
    gen = torch.Generator().manual_seed(21)
    extra = TinyControlNet().load(3, 3)[0]
    extra_hints = torch.rand(frames, H * 8, W * 8, 3, generator=gen)
    same = text(1)
    positive, negative = core_nodes.ControlNetApplyAdvanced().apply_controlnet(
        [[same, {}]], [[same.clone(), {}]], extra, extra_hints, 0.7, 0.0, 1.0
    )
    conditioning = apply_controlnets(
        comfy_host,
        positive,
        negative,
        pose_controlnet=TinyControlNet().load(1, 3)[0],
        pose_images=torch.rand(frames, H * 8, W * 8, 3, generator=gen),
        face_controlnet=TinyControlNet().load(2, 6)[0],
        face_condition=torch.rand(frames, H * 8, W * 8, 6, generator=gen),
    )
    head = conditioning[0][0][1]["control"]
    users_chain = controlnet_patch.chain_of(head)
    assert [type(c) for c in users_chain[1:]] == [controlnet_patch.XDynaControlNet, comfy.controlnet.ControlNet]

    adopted = sample(comfy_host, setup, frames, conditioning)
    assert sorted(counted.values()) == [frames * STEPS] * 3  # fused: each frame once per step, both branches
    assert controlnet_patch.chain_of(head) == users_chain  # the same objects, linked as they were

    counted.clear()
    monkeypatch.setattr(model_patch, "adopt_controls", lambda conds: None)
    as_chained = sample(comfy_host, setup, frames, conditioning)
    assert counted[id(extra.control_model)] > 2 * frames * STEPS  # core's way: each window of each branch
    torch.testing.assert_close(adopted, as_chained, rtol=0, atol=1e-6)


def test_an_unfused_chain_plans_a_cache_per_controlnet_and_a_full_cache_the_budget(
    comfy_host, setup, plans, unfused, monkeypatch
):
    controlnet_patch = pack(comfy_host, "xdyna_comfy.controlnets")
    same = text(1)
    for frames in (16, 40):
        sample(comfy_host, setup, frames, controls(comfy_host, frames, same, same.clone()))
    fused = plans[1] - plans[0]
    unfused()
    sample(comfy_host, setup, 40, controls(comfy_host, 40, same, same.clone()))
    assert fused > 0 and plans[2] - plans[0] == 2 * fused  # pose and S-Face each keep their own residuals
    monkeypatch.setattr(controlnet_patch, "CACHE_BUDGET_BYTES", 1000)
    sample(comfy_host, setup, 40, controls(comfy_host, 40, same, same.clone()))
    assert plans[3] - plans[0] == 2 * 1000  # past the budget the rest is moved or recomputed: never on the device
