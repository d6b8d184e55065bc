"""The X-Dyna model nodes in real ComfyUI graphs with the stock KSampler, and the patch's isolation."""

from __future__ import annotations

import shutil
from dataclasses import replace

import pytest
import torch

from tests.fixtures.official_layout import TINY_RESAMPLER, TINY_UNET, unet_key_groups
from tests.fixtures.weights import (
    ip_adapter_plus_state_dict,
    save_bin,
    save_ckpt,
    save_safetensors,
    xdyna_unet_state_dict,
)
from tests.host.comfy_host import PromptError
from tests.host.support_nodes import SUPPORT_NODES, TINY_CLIP_VISION
from tests.host.xdyna_setup import pack, random_reference, tiny_xdyna
from tests.oracles.official_preprocess import official_reference_crop

WIDTH, HEIGHT = 48, 64  # latent 6 x 8
# A Resampler shaped for the tiny CLIP vision (hidden 32) and the tiny UNet (context 32), head width 64 as released.
TINY_IP_RESAMPLER = replace(TINY_RESAMPLER, dim=32, depth=2, dim_head=64, heads=1, embedding_dim=32, output_dim=32)


@pytest.fixture(scope="module")
def files(comfy_host, shared_data):
    """Tiny official-layout weights in the host's model folders, the reference image in its input folder."""
    models = comfy_host.workdir / "models"
    (models / "xdyna").mkdir(parents=True, exist_ok=True)
    (models / "ipadapter").mkdir(parents=True, exist_ok=True)
    sd = xdyna_unet_state_dict(TINY_UNET, seed=5)
    save_safetensors(sd, models / "xdyna" / "tiny-xdyna.safetensors")
    save_ckpt(sd, models / "xdyna" / "tiny-xdyna.ckpt", wrap_state_dict=True)
    plain = {k: v for k, v in sd.items() if k in unet_key_groups(TINY_UNET)["unet"]}
    save_safetensors(plain, models / "xdyna" / "plain-sd15-unet.safetensors")
    (models / "xdyna" / "truncated.ckpt").write_bytes((models / "xdyna" / "tiny-xdyna.ckpt").read_bytes()[:5000])
    save_bin(
        ip_adapter_plus_state_dict(TINY_UNET, TINY_IP_RESAMPLER, seed=6), models / "ipadapter" / "tiny-ip-plus.bin"
    )
    fp = comfy_host.folder_paths
    fp.add_model_folder_path("xdyna", str(models / "xdyna"), is_default=True)
    fp.add_model_folder_path("ipadapter", str(models / "ipadapter"), is_default=True)
    comfy_host.nodes.NODE_CLASS_MAPPINGS.update(SUPPORT_NODES)
    shutil.copy(shared_data / "reference_1.png", comfy_host.input_dir / "reference_1.png")
    return sd


def xdyna_graph(ckpt="tiny-xdyna.safetensors", frames=5, latent_size=(WIDTH, HEIGHT), patched=True, seed=7):
    prompt = {
        "model": {"class_type": "XDyna_LoadModel", "inputs": {"ckpt_name": ckpt, "precision": "fp32"}},
        "image": {"class_type": "LoadImage", "inputs": {"image": "reference_1.png"}},
        "vae": {"class_type": "XDynaTest_TinyVAE", "inputs": {"seed": 1}},
        "clip_vision": {"class_type": "XDynaTest_TinyClipVision", "inputs": {"seed": 2}},
        "reference": {
            "class_type": "XDyna_LoadReference",
            "inputs": {
                "image": ["image", 0],
                "vae": ["vae", 0],
                "clip_vision": ["clip_vision", 0],
                "ip_adapter": "tiny-ip-plus.bin",
                "width": WIDTH,
                "height": HEIGHT,
                "crop": "center",
            },
        },
        "patch": {
            "class_type": "XDyna_ApplyDynamicsAdapter",
            "inputs": {"model": ["model", 0], "xdyna": ["model", 1], "reference": ["reference", 0], "strength": 1.0},
        },
        "positive": {"class_type": "XDynaTest_TinyConditioning", "inputs": {"seed": 3, "width": 32}},
        "negative": {"class_type": "XDynaTest_TinyConditioning", "inputs": {"seed": 4, "width": 32}},
        "latent": {
            "class_type": "EmptyLatentImage",
            "inputs": {"width": latent_size[0], "height": latent_size[1], "batch_size": frames},
        },
        "sampler": {
            "class_type": "KSampler",
            "inputs": {
                "model": ["patch" if patched else "model", 0],
                "seed": seed,
                "steps": 3,
                "cfg": 7.5,
                "sampler_name": "ddim",
                "scheduler": "ddim_uniform",
                "positive": ["positive", 0],
                "negative": ["negative", 0],
                "latent_image": ["latent", 0],
                "denoise": 1.0,
            },
        },
        "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["sampler", 0], "vae": ["vae", 0]}},
        "preview": {"class_type": "PreviewImage", "inputs": {"images": ["decode", 0]}},
    }
    return prompt


def test_ksampler_runs_the_patched_model_in_a_graph(comfy_host, files):
    run = comfy_host.run(xdyna_graph())
    samples = run.outputs("sampler")[0]["samples"]
    assert samples.shape == (5, 4, HEIGHT // 8, WIDTH // 8)
    assert torch.isfinite(samples).all()
    assert run.outputs("decode")[0].shape == (5, HEIGHT, WIDTH, 3)
    assert run.log.progress and run.log.progress[-1] == (3, 3)  # the stock progress bar advanced

    again = comfy_host.run(xdyna_graph()).outputs("sampler")[0]["samples"]
    assert torch.equal(samples, again), "the same graph and seed must give the same video"
    unpatched = comfy_host.run(xdyna_graph(patched=False)).outputs("sampler")[0]["samples"]
    assert not torch.allclose(samples, unpatched, atol=1e-3), "the X-Dyna patch changed nothing"
    # the input MODEL is untouched by the patched runs: the plain model gives its own result again
    plain_again = comfy_host.run(xdyna_graph(patched=False)).outputs("sampler")[0]["samples"]
    assert torch.equal(unpatched, plain_again)


def test_ckpt_and_safetensors_load_the_same(comfy_host, files):
    a = comfy_host.run(xdyna_graph("tiny-xdyna.safetensors", frames=2)).outputs("sampler")[0]["samples"]
    b = comfy_host.run(xdyna_graph("tiny-xdyna.ckpt", frames=2)).outputs("sampler")[0]["samples"]
    assert torch.equal(a, b)


def test_load_reference_computes_latent_and_image_tokens(comfy_host, files):
    run = comfy_host.run(xdyna_graph(frames=1))
    reference, image = run.outputs("reference")
    loaded = run.outputs("image")[0][0]
    expected_image = official_reference_crop((loaded * 255).round().to(torch.uint8).numpy(), HEIGHT, WIDTH)
    assert image.shape == (1, HEIGHT, WIDTH, 3)
    assert (image[0] * 255 - torch.from_numpy(expected_image).float()).abs().max() <= 1.5

    vae = run.outputs("vae")[0]
    clip = run.outputs("clip_vision")[0]
    ip_adapter = pack(comfy_host, "xdyna_core.ip_adapter")
    resampler = ip_adapter.load_ip_adapter_plus(comfy_host.workdir / "models" / "ipadapter" / "tiny-ip-plus.bin")
    with torch.inference_mode():
        latent = vae.encode(image)
        cond = resampler(clip.encode_image(loaded[None], crop=True)["penultimate_hidden_states"].float())
        zeros = torch.zeros(1, 3, TINY_CLIP_VISION["image_size"], TINY_CLIP_VISION["image_size"])
        uncond = resampler(clip.model(pixel_values=zeros, intermediate_output=-2)[1].float())
    torch.testing.assert_close(reference.latent, latent.float())
    torch.testing.assert_close(reference.image_tokens, cond)
    torch.testing.assert_close(reference.uncond_image_tokens, uncond)
    assert not torch.allclose(cond, uncond)


@pytest.mark.parametrize(
    ("ckpt", "message"),
    [
        ("plain-sd15-unet.safetensors", "no Dynamics-Adapter"),
        ("truncated.ckpt", "damaged or incomplete"),
    ],
)
def test_wrong_checkpoints_are_named(comfy_host, files, ckpt, message):
    with pytest.raises(PromptError) as err:
        comfy_host.run(xdyna_graph(ckpt, frames=1))
    assert ckpt in str(err.value) and message in str(err.value)


def test_videos_longer_than_a_window_are_tiled(comfy_host, files):
    """25 frames exceed what the motion modules take at once; the patched MODEL samples them in windows."""
    samples = comfy_host.run(xdyna_graph(frames=25)).outputs("sampler")[0]["samples"]
    assert samples.shape[0] == 25 and torch.isfinite(samples).all()


def test_reference_of_another_size_is_a_clear_error(comfy_host, files):
    with pytest.raises(PromptError) as err:
        comfy_host.run(xdyna_graph(frames=2, latent_size=(64, 64)))
    assert "reference latent is 48x64" in str(err.value) and "64x64" in str(err.value)


# --- isolation, stacking with other packs, interruption (in process, through ComfyUI's sampling API) -----------


@pytest.fixture(scope="module")
def tiny(comfy_host):
    return tiny_xdyna(comfy_host, seed=21)


def sample(model, frames=3, seed=0, callback=None, steps=3):
    import comfy.sample

    gen = torch.Generator().manual_seed(seed)
    latent = torch.zeros(frames, 4, 4, 6)
    noise = torch.randn(latent.shape, generator=gen)
    positive = [[torch.randn(1, 77, 32, generator=gen), {}]]
    negative = [[torch.randn(1, 77, 32, generator=gen), {}]]
    return comfy.sample.sample(
        model,
        noise,
        steps,
        7.5,
        "ddim",
        "ddim_uniform",
        positive,
        negative,
        latent,
        callback=callback,
        disable_pbar=True,
        seed=seed,
    )


def patch(comfy_host, tiny, model, seed=1):
    model_patch = pack(comfy_host, "xdyna_comfy.model_patch")
    patched = model.clone()
    reference = random_reference(comfy_host, TINY_UNET, 4, 6, seed=seed)
    model_patch.XDynaPatch(tiny.weights.components, reference).apply_to(patched, tiny.weights.patcher)
    return patched


def test_patching_leaves_the_input_model_untouched(comfy_host, tiny):
    import comfy.model_management

    before = sample(tiny.model)
    options_before = repr(tiny.model.model_options)
    patched = patch(comfy_host, tiny, tiny.model)
    assert not torch.allclose(sample(patched), before)
    # the X-Dyna weights were loaded by ComfyUI's memory manager, beside the UNet
    loaded = [m.model for m in comfy.model_management.current_loaded_models]
    assert any(m is tiny.weights.patcher for m in loaded)
    assert repr(tiny.model.model_options) == options_before
    assert not tiny.model.object_patches and not tiny.model.injections
    assert torch.equal(sample(tiny.model), before)


def test_other_packs_attention_patches_still_run(comfy_host, tiny):
    calls = {"attn1": 0, "attn2": 0}

    def other_attn1_output(n, extra_options):
        calls["attn1"] += 1
        return n

    def other_attn2(n, context, value, extra_options):
        calls["attn2"] += 1
        return n, context, value

    ours = sample(patch(comfy_host, tiny, tiny.model))
    before = tiny.model.clone()  # another pack patched first, ours on top
    before.set_model_attn1_output_patch(other_attn1_output)
    before.set_model_attn2_patch(other_attn2)
    assert torch.equal(sample(patch(comfy_host, tiny, before)), ours)
    assert calls["attn1"] > 0 and calls["attn2"] > 0
    after = patch(comfy_host, tiny, tiny.model)  # ours first, another pack on top
    after.set_model_attn1_output_patch(other_attn1_output)
    counted = calls["attn1"]
    assert torch.equal(sample(after), ours)
    assert calls["attn1"] > counted


def test_more_frames_than_the_motion_modules_take_is_a_clear_error(comfy_host, tiny):
    """Without context windows (e.g. another pack's sampler), a batch of 25 frames is refused with a clear message."""
    model_patch = pack(comfy_host, "xdyna_comfy.model_patch")
    with pytest.raises(model_patch.XDynaInputError, match="given 25 frames at once.*at most 24"):
        sample(patch(comfy_host, tiny, tiny.model), frames=25, steps=1)


def test_interrupting_a_run_leaves_the_model_clean(comfy_host, tiny):
    import comfy.model_management

    patched = patch(comfy_host, tiny, tiny.model)
    fresh_patched = sample(patched)
    fresh_plain = sample(tiny.model)

    def interrupt(step, *args):
        if step == 1:
            raise comfy.model_management.InterruptProcessingException()

    with pytest.raises(comfy.model_management.InterruptProcessingException):
        sample(patch(comfy_host, tiny, tiny.model), callback=interrupt)
    assert torch.equal(sample(tiny.model), fresh_plain)
    assert torch.equal(sample(patched), fresh_patched)
