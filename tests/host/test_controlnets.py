"""X-Dyna's ControlNets in ComfyUI: loading the official layout, attaching them, and their checks."""

from __future__ import annotations

import pytest
import torch

from tests.fixtures.official_layout import SD15_UNET, TINY_UNET, controlnet_key_shapes
from tests.fixtures.weights import controlnet_state_dict, save_ckpt
from tests.host.support_nodes import SUPPORT_NODES, TinyControlNet
from tests.host.xdyna_setup import apply_controlnets, pack, random_reference, tiny_xdyna


@pytest.fixture(scope="module")
def glue(comfy_host):
    module = pack(comfy_host, "xdyna_comfy.loaders")
    TinyControlNet.glue = module
    comfy_host.nodes.NODE_CLASS_MAPPINGS.update(SUPPORT_NODES)
    return module


@pytest.mark.parametrize("hint_channels", [3, 6])
def test_core_and_pack_loaders_read_the_official_sd15_layout(comfy_host, glue, hint_channels):
    """Real-size diffusers ControlNets (zeros, fp16): core's loader and ours build the same network."""
    import comfy.controlnet

    shapes = controlnet_key_shapes(SD15_UNET, hint_channels)
    core = comfy.controlnet.load_controlnet_state_dict(
        {k: torch.zeros(s, dtype=torch.float16) for k, s in shapes.items()}
    )
    ours = glue.build_sd15_controlnet({k: torch.zeros(s, dtype=torch.float16) for k, s in shapes.items()}, "fp16")
    assert core.control_model.input_hint_block[0].weight.shape[1] == hint_channels
    core_shapes = {k: tuple(v.shape) for k, v in core.control_model.state_dict().items()}
    assert core_shapes == {k: tuple(v.shape) for k, v in ours.control_model.state_dict().items()}


def test_pack_loader_node_reads_tensors_only_ckpt(comfy_host, glue):
    folder = comfy_host.workdir / "models" / "controlnet"
    folder.mkdir(parents=True, exist_ok=True)
    sd = controlnet_state_dict(TINY_UNET, 6, seed=2)
    save_ckpt(sd, folder / "tiny-face-cn.ckpt")
    comfy_host.folder_paths.add_model_folder_path("controlnet", str(folder), is_default=True)
    prompt = {
        "cn": {
            "class_type": "XDyna_LoadControlNet",
            "inputs": {"control_net_name": "tiny-face-cn.ckpt", "precision": "fp32"},
        }
    }
    control = comfy_host.run(prompt, targets=["cn"]).outputs("cn")[0]
    hint_conv = control.control_model.input_hint_block[0].weight
    assert torch.equal(hint_conv, sd["controlnet_cond_embedding.conv_in.weight"])


def apply(comfy_host, **kwargs):
    positive = [[torch.zeros(1, 77, 32), {}]]
    negative = [[torch.ones(1, 77, 32), {}]]
    return apply_controlnets(comfy_host, positive, negative, **kwargs)


def test_controlnets_chain_and_share_hints(comfy_host, glue):
    pose = TinyControlNet().load(0, 3)[0]
    face = TinyControlNet().load(1, 6)[0]
    hints = torch.rand(5, 32, 48, 3)
    face_hints = torch.rand(5, 32, 48, 6)
    positive, negative = apply(
        comfy_host, pose_controlnet=pose, pose_images=hints, face_controlnet=face, face_condition=face_hints
    )
    for conditioning in (positive, negative):
        control = conditioning[0][1]["control"]
        assert control.xdyna_name == "S-Face ControlNet" and control.previous_controlnet.xdyna_name == "pose ControlNet"
    assert positive[0][1]["control"] is negative[0][1]["control"], "both CFG branches share the same hints"
    control = positive[0][1]["control"]
    assert control.hint_shape == (5, 6, 32, 48) and control.cond_hint_original is None  # never a whole-clip copy
    assert control.hint_frames.images is face_hints


def test_controlnet_mistakes_are_named(comfy_host, glue):
    pose = TinyControlNet().load(0, 3)[0]
    with pytest.raises(ValueError, match="takes 3-channel hints but needs 6"):
        apply(comfy_host, face_controlnet=pose, face_condition=torch.rand(2, 32, 48, 6))
    with pytest.raises(ValueError, match="needs both a ControlNet and hint frames; its hint frames is not connected"):
        apply(comfy_host, pose_controlnet=pose)


def test_hint_frames_must_match_the_video(comfy_host, glue):
    """Core cycles a short hint batch silently; here it is an error naming the hint and both counts."""
    import comfy.sample

    tiny = tiny_xdyna(comfy_host, seed=4)
    model_patch = pack(comfy_host, "xdyna_comfy.model_patch")
    context_patch = pack(comfy_host, "xdyna_comfy.context_windows")
    controlnets = pack(comfy_host, "xdyna_comfy.controlnets")
    model = tiny.model.clone()
    model_patch.XDynaPatch(tiny.weights.components, random_reference(comfy_host, TINY_UNET, 4, 6, 0)).apply_to(
        model, tiny.weights.patcher
    )
    context_patch.ContextOptions().apply_to(model)
    positive, negative = apply(
        comfy_host, pose_controlnet=TinyControlNet().load(0, 3)[0], pose_images=torch.rand(3, 32, 48, 3)
    )
    latent = torch.zeros(5, 4, 4, 6)
    with pytest.raises(controlnets.FrameCountError, match="pose ControlNet hint has 3 frames but the video has 5"):
        comfy.sample.sample(
            model, torch.randn(latent.shape), 1, 7.5, "ddim", "ddim_uniform", positive, negative, latent, seed=0
        )


def test_core_controlnets_get_each_windows_frames_too(comfy_host, glue):
    """A ControlNet applied with core's Apply ControlNet node is windowed like ours (core alone would give every
    window the first frames' hints): both give the same 20-frame video."""
    import comfy.sample
    import nodes as core_nodes

    tiny = tiny_xdyna(comfy_host, seed=6, residual_gain=0.1, output_gain=0.1)
    model = (
        pack(comfy_host, "nodes.model_nodes")
        .XDynaApplyDynamicsAdapter.execute(
            tiny.model, tiny.weights, random_reference(comfy_host, TINY_UNET, 4, 6, 0), 1.0
        )
        .args[0]
    )
    control = TinyControlNet().load(0, 3)[0]
    frames = torch.rand(20, 32, 48, 3, generator=torch.Generator().manual_seed(3))
    positive, negative = [[torch.zeros(1, 77, 32), {}]], [[torch.ones(1, 77, 32), {}]]  # as `apply` uses
    core = core_nodes.ControlNetApplyAdvanced().apply_controlnet(positive, negative, control, frames, 1.0, 0.0, 1.0)
    ours = apply(comfy_host, pose_controlnet=control, pose_images=frames, normalize_hints=False)

    def run(conditioning):
        latent = torch.zeros(20, 4, 4, 6)
        noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(5))
        return comfy.sample.sample(model, noise, 2, 7.5, "ddim", "ddim_uniform", *conditioning, latent, seed=5)

    assert torch.equal(run(core), run(ours))


@pytest.mark.parametrize("layout", ["planar", "channels_last"])
def test_normalising_in_place_gives_the_release_min_max_bit_for_bit(comfy_host, layout):
    """`normalise` (subtract, divide, in place, on the compute device) = `where(high > low, (x - low) / (high -
    low), x)`, the per-channel min-max as computed before it moved there; a channel constant over the clip keeps
    its values exactly."""
    normalise = pack(comfy_host, "xdyna_comfy.controlnets").normalise
    gen = torch.Generator().manual_seed(8)
    frames = torch.rand(3, 5, 4, 6, generator=gen) * 3 - 1  # [k, H, W, C] as the clip holds it
    frames[..., 2] = 0.375
    hint = frames.movedim(-1, 1).contiguous() if layout == "planar" else frames.movedim(-1, 1)
    low, high = hint.amin((0, 2, 3)), hint.amax((0, 2, 3))
    low[4], high[4] = high[4], low[4]  # a range given inverted: treated like a constant channel
    lo, hi = low.reshape(1, -1, 1, 1), high.reshape(1, -1, 1, 1)
    expected = torch.where(hi > lo, (hint - lo) / torch.where(hi > lo, hi - lo, torch.ones_like(hi)), hint)
    original = hint.clone()
    out = normalise(hint, low, high)
    assert out.data_ptr() == hint.data_ptr()  # in place: no second window-sized tensor
    assert torch.equal(out, expected)
    assert torch.equal(out[:, [2, 4]], original[:, [2, 4]]) and not torch.equal(out[:, 0], original[:, 0])
    assert out[:, 0].min() == 0 and out[:, 0].max() == 1


def test_residuals_for_the_reference_frames_are_padded_in_the_callers_lists(comfy_host):
    """Each CFG chunk's reference frame gets zero residuals; the lists core's `_calc_cond_batch` holds for the
    UNet call are rewritten in place, so the unpadded residuals die at once instead of living through the call."""
    import weakref

    model_patch = pack(comfy_host, "xdyna_comfy.model_patch")
    gen = torch.Generator().manual_seed(0)
    chunks, window = 2, 3
    originals = [torch.randn(chunks * window, 4, 2, 2, generator=gen) for _ in range(2)]
    expected = [
        torch.cat([torch.cat([torch.zeros(1, 4, 2, 2), r[c * window : (c + 1) * window]]) for c in range(chunks)])
        for r in originals
    ]
    alive = [weakref.ref(r) for r in originals]
    output, middle = [originals[0], None], [originals[1]]
    control = {"output": output, "middle": middle, "other": "kept"}
    del originals
    padded = model_patch._control_with_reference(control, chunks)
    assert padded is control and control["output"] is output and control["middle"] is middle
    assert control["other"] == "kept" and output[1] is None
    torch.testing.assert_close(output[0], expected[0], rtol=0, atol=0)
    torch.testing.assert_close(middle[0], expected[1], rtol=0, atol=0)
    assert all(ref() is None for ref in alive)  # nothing holds the unpadded residuals any more
    assert model_patch._control_with_reference(None, chunks) is None


@pytest.mark.parametrize("shared", [True, False], ids=["one-set", "a-set-per-chunk"])
def test_residuals_given_per_chunk_are_added_to_the_frame_rows_as_core_adds_padded_ones(comfy_host, shared):
    """`_chunk_control`: the UNet gets the middle residual padded and no output residuals; its output patch
    adds each output residual to the frame rows of the skip connection (`hsp`), the values of core's
    `hsp += padded` with zeros for the reference, popping each set's list as it goes (a shared set once)."""
    import weakref

    controlnets = pack(comfy_host, "xdyna_comfy.controlnets")
    model_patch = pack(comfy_host, "xdyna_comfy.model_patch")
    gen = torch.Generator().manual_seed(1)
    chunks, window = 2, 3

    def residual_set():
        return {
            "input": [],
            "middle": [torch.randn(window, 8, 1, 1, generator=gen)],
            "output": [torch.randn(window, 4, 2, 2, generator=gen), None, torch.randn(window, 4, 2, 2, generator=gen)],
        }

    sets = [residual_set()] * chunks if shared else [residual_set() for _ in range(chunks)]
    expected = {
        key: [
            None if layer[0] is None else model_patch._zero_first_per_chunk(torch.cat(layer), chunks)
            for layer in zip(*(s[key] for s in sets))
        ]
        for key in ("middle", "output")
    }
    alive = [weakref.ref(t) for s in sets for t in s["output"] if t is not None]
    control, add_output = model_patch._chunk_control(controlnets.ChunkResiduals(tuple(sets)), chunks)
    assert control["output"] == [] and control["input"] == []
    torch.testing.assert_close(control["middle"][0], expected["middle"][0], rtol=0, atol=0)
    for layer in reversed(range(3)):  # the UNet pops the deepest first
        hsp = torch.randn(chunks * (window + 1), 4, 2, 2, generator=gen)
        h = torch.randn(chunks * (window + 1), 4, 2, 2, generator=gen)
        want = hsp if expected["output"][layer] is None else hsp + expected["output"][layer]
        h_out, hsp_out = add_output(h, hsp.clone(), {})
        assert h_out is h
        torch.testing.assert_close(hsp_out, want, rtol=0, atol=0)
    assert all(s["output"] == [] for s in sets)
    del sets, expected
    assert all(ref() is None for ref in alive)  # popped: the call no longer holds them
    with pytest.raises(ValueError, match="residuals for 2 CFG chunks in a call of 1"):
        model_patch._chunk_control(controlnets.ChunkResiduals((residual_set(), residual_set())), 1)


def test_on_a_model_without_x_dyna_the_controlnets_give_core_residuals(comfy_host, glue):
    """X-Dyna Apply ControlNets on a plain SD1.5 MODEL (no X-Dyna patch, which alone takes residuals per chunk):
    the same video as core's Apply ControlNet chain with the same networks and hints."""
    import comfy.sample
    import nodes as core_nodes

    tiny = tiny_xdyna(comfy_host, seed=6, residual_gain=0.1, output_gain=0.1)
    pose, face = TinyControlNet().load(0, 3)[0], TinyControlNet().load(1, 6)[0]
    gen = torch.Generator().manual_seed(4)
    pose_hints, face_hints = torch.rand(4, 32, 48, 3, generator=gen), torch.rand(4, 32, 48, 6, generator=gen)
    positive, negative = [[torch.zeros(1, 77, 32), {}]], [[torch.ones(1, 77, 32), {}]]  # as `apply` uses
    core_apply = core_nodes.ControlNetApplyAdvanced().apply_controlnet
    core = core_apply(positive, negative, pose, pose_hints, 1.0, 0.0, 1.0)
    core = core_apply(*core, face, face_hints, 1.0, 0.0, 1.0)
    ours = apply(
        comfy_host,
        pose_controlnet=pose,
        pose_images=pose_hints,
        face_controlnet=face,
        face_condition=face_hints,
        normalize_hints=False,
    )

    def run(conditioning):
        latent = torch.zeros(4, 4, 4, 6)
        noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(5))
        return comfy.sample.sample(tiny.model, noise, 2, 7.5, "ddim", "ddim_uniform", *conditioning, latent, seed=5)

    plain = run((positive, negative))
    with_core, with_ours = run(core), run(ours)
    assert not torch.allclose(with_core, plain, rtol=1e-3, atol=1e-3)  # the ControlNets act
    torch.testing.assert_close(with_ours, with_core, rtol=0, atol=1e-6)
