"""Workflow rewriting for batch jobs: loaders, seeds, frame counts and prefixes found by class type."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from xdyna_tools.workflow import WorkflowError, WorkflowTemplate, apply_overrides, parse_override


def graph() -> dict:
    """A trimmed X-Dyna API workflow with the ambiguities real ones have (two images, two samplers)."""
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": "example.png"}},
        "2": {"class_type": "XDyna_CropResize", "inputs": {"image": ["1", 0], "width": 512, "height": 896}},
        "3": {"class_type": "XDyna_LoadReference", "inputs": {"image": ["2", 0], "width": 512, "height": 896}},
        "4": {"class_type": "LoadImage", "inputs": {"image": "logo.png"}, "_meta": {"title": "Watermark"}},
        "5": {"class_type": "LoadVideo", "inputs": {"file": "dance.mp4"}},
        "6": {"class_type": "GetVideoComponents", "inputs": {"video": ["14", 0]}},
        "7": {"class_type": "ImageFromBatch", "inputs": {"image": ["6", 0], "batch_index": 0, "length": 64}},
        "8": {"class_type": "ImageFromBatch", "inputs": {"image": ["4", 0], "batch_index": 0, "length": 1}},
        "9": {
            "class_type": "XDyna_TemporalSampler",
            "inputs": {"seed": 1, "steps": 25, "frames": 16, "model": ["3", 0]},
        },
        "10": {"class_type": "KSampler", "inputs": {"seed": ["11", 0], "steps": 20}},
        "11": {"class_type": "PrimitiveInt", "inputs": {"value": 5}},
        "12": {"class_type": "SaveVideo", "inputs": {"video": ["9", 0], "filename_prefix": "video/xdyna"}},
        "13": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "ComfyUI"}},
        "14": {"class_type": "VideoTemporalCrop", "inputs": {"video": ["5", 0], "start_frame": 0, "length": 32}},
    }


def test_loaders_are_found_by_class_and_by_what_they_feed():
    template = WorkflowTemplate.from_prompt(graph())
    assert template.reference_node == "1"  # the LoadImage upstream of XDyna_LoadReference, not the watermark
    assert template.driving_node == "5"
    assert "XDyna_TemporalSampler" in template.class_types()


def test_render_rewrites_inputs_seeds_frames_and_prefixes_and_leaves_the_template_alone():
    source = graph()
    template = WorkflowTemplate.from_prompt(source)
    prompt = template.render("xdyna_batch/ref.png", "xdyna_batch/drv.mp4", 1234, "alice", frames=8)
    assert prompt["1"]["inputs"]["image"] == "xdyna_batch/ref.png"
    assert prompt["4"]["inputs"]["image"] == "logo.png"
    assert prompt["5"]["inputs"]["file"] == "xdyna_batch/drv.mp4"
    assert prompt["9"]["inputs"]["seed"] == 1234 and prompt["9"]["inputs"]["frames"] == 8
    assert prompt["10"]["inputs"]["seed"] == ["11", 0]  # a linked seed is left to its source
    assert prompt["7"]["inputs"]["length"] == 8  # frame selections of the driving video
    assert prompt["14"]["inputs"]["length"] == 8 and prompt["14"]["inputs"]["start_frame"] == 0
    assert prompt["8"]["inputs"]["length"] == 1  # an ImageFromBatch elsewhere is not a frame count
    assert prompt["12"]["inputs"]["filename_prefix"] == "xdyna_batch/alice/xdyna"
    assert prompt["13"]["inputs"]["filename_prefix"] == "xdyna_batch/alice/ComfyUI"
    assert template.prompt == source and prompt is not template.prompt
    unchanged = template.render("r.png", "d.mp4", 1, "bob")
    assert unchanged["9"]["inputs"]["frames"] == 16 and unchanged["7"]["inputs"]["length"] == 64


def test_overrides_by_id_class_and_title():
    template = WorkflowTemplate.from_prompt(graph())
    prompt = template.render(
        "r.png", "d.mp4", 1, "a", overrides={"9.steps": 10, "KSampler.steps": 4, "Watermark.image": "other.png"}
    )
    assert prompt["9"]["inputs"]["steps"] == 10 and prompt["10"]["inputs"]["steps"] == 4
    assert prompt["4"]["inputs"]["image"] == "other.png"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"steps": 3}, "write it as NODE.input"),
        ({"Nope.steps": 3}, "no node with id, class type or title 'Nope'"),
        ({"9.stepz": 3}, "has no input 'stepz'; it has frames, seed, steps"),
        ({"10.seed": 3}, "is a connection"),
    ],
)
def test_bad_overrides_say_what_is_wrong(override, message):
    with pytest.raises(WorkflowError, match=message):
        apply_overrides(graph(), override)


def test_ambiguous_loaders_need_a_title_or_an_explicit_node():
    prompt = graph()
    prompt["20"] = {"class_type": "LoadVideo", "inputs": {"file": "pose.mp4"}}
    with pytest.raises(WorkflowError, match="several driving-video loaders: 5 .*20 .*--driving-node"):
        WorkflowTemplate.from_prompt(prompt)
    assert WorkflowTemplate.from_prompt(prompt, driving_node="20").driving_node == "20"
    prompt["5"]["_meta"] = {"title": "Driving video"}
    assert WorkflowTemplate.from_prompt(prompt).driving_node == "5"
    with pytest.raises(WorkflowError, match="--driving-node 2 is a XDyna_CropResize"):
        WorkflowTemplate.from_prompt(prompt, driving_node="2")
    with pytest.raises(WorkflowError, match="--reference-node 99: no node with that id"):
        WorkflowTemplate.from_prompt(prompt, reference_node="99")


def test_without_an_x_dyna_reference_node_a_single_or_titled_image_loader_is_used():
    prompt = {k: v for k, v in graph().items() if k not in ("3",)}
    with pytest.raises(WorkflowError, match="several reference-image loaders"):
        WorkflowTemplate.from_prompt(prompt)
    prompt["1"]["_meta"] = {"title": "Reference image"}
    assert WorkflowTemplate.from_prompt(prompt).reference_node == "1"
    del prompt["5"]
    with pytest.raises(WorkflowError, match="no driving-video loader"):
        WorkflowTemplate.from_prompt(prompt)


def test_ui_format_and_broken_files_are_refused_with_advice(tmp_path):
    ui = tmp_path / "ui.json"
    ui.write_text(json.dumps({"nodes": [], "links": [], "version": 0.4}))
    with pytest.raises(WorkflowError, match="UI-format workflow.*Export \\(API\\)"):
        WorkflowTemplate.load(ui)
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(WorkflowError, match="cannot read the workflow"):
        WorkflowTemplate.load(broken)
    api = tmp_path / "api.json"
    api.write_text(json.dumps(graph()))
    assert WorkflowTemplate.load(api).digest == WorkflowTemplate.from_prompt(graph()).digest


def test_command_line_overrides_parse_json_values():
    assert parse_override("sampler.steps=12") == ("sampler.steps", 12)
    assert parse_override("sampler.cfg=7.5") == ("sampler.cfg", 7.5)
    assert parse_override("load.ckpt_name=unet.ckpt") == ("load.ckpt_name", "unet.ckpt")
    assert parse_override("x.flag=true") == ("x.flag", True)
    with pytest.raises(WorkflowError):
        parse_override("no-equals")


EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "example_workflows" / "api").glob("*.json"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_the_packs_api_example_workflows_serve_as_batch_templates(path):
    template = WorkflowTemplate.load(path)
    prompt = template.render("xdyna_batch/r.png", "xdyna_batch/d.mp4", 99, "job", frames=24)
    assert prompt[template.reference_node]["class_type"] == "LoadImage"
    assert prompt[template.driving_node]["class_type"] in ("LoadVideo", "VHS_LoadVideo")
    samplers = [n for n in prompt.values() if n["class_type"] == "XDyna_TemporalSampler"]
    assert samplers and all(n["inputs"]["seed"] == 99 for n in samplers)
    saves = [n["inputs"]["filename_prefix"] for n in prompt.values() if "filename_prefix" in n["inputs"]]
    assert saves and all(p.startswith("xdyna_batch/job/") for p in saves)
