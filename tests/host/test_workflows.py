"""The example workflows in a real ComfyUI server and its real front-end (headless Debian Chromium).

For every workflow of `example_workflows/`:

- the server lists it as a template of this pack and serves it with its thumbnail;
- its API file is what `xdyna_tools.examples` computes from the description and the live node schemas;
- the front-end loads the UI file with every node type registered, no missing node, model or media and no
  node flagged, and its own API conversion (`app.graphToPrompt`) equals the API file;
- with the model files absent, the front-end's missing-models panel names each file's folder and address;
- opened from the template browser, it opens at a zoom where LiteGraph draws text;
- the server's validation (POST /prompt) accepts the API file, with the files its widgets name present as
  placeholders (and reports the node when one is missing). The accepted prompt is taken off the queue at once:
  running the full-size graphs is not the point here (tests/host/test_video_graph.py runs one end to end).

Screenshots of each loaded workflow go to the test's temporary folder and, when `XDYNA_ARTIFACTS` is set, there.
"""

from __future__ import annotations

import copy
import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from xdyna_core.weights_manifest import WEIGHTS
from xdyna_tools.examples import api, graphs
from xdyna_tools.examples.build import VIEW_KEY

EXAMPLES = REPO_ROOT / "example_workflows"
PACK = "comfyui-xdyna"  # the server fixture installs the pack under this folder name
NAMES = [w.name for w in graphs.workflows()]
SIZED = ("XDyna_LoadReference", "XDyna_RenderPose", "XDyna_FaceCropper", "XDyna_CropResize")
REBUILD = "rebuild with: python -m xdyna_tools.examples"

# Console noise of a fresh profile on a server without user data, and the refused requests to outside hosts.
CONSOLE_NOISE = (
    "/user.css",
    "/api/userdata",
    "ComfyApp graph accessed before initialization",
    "net::ERR_FAILED",
    "net::ERR_NAME_NOT_RESOLVED",
)


def ui_file(name: str) -> dict:
    return json.loads((EXAMPLES / f"{name}.json").read_text(encoding="utf-8"))


def api_file(name: str) -> dict:
    return json.loads((EXAMPLES / "api" / f"{name}.json").read_text(encoding="utf-8"))


def post_json(url: str, payload: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            body = response.read()
            return response.status, json.loads(body) if body else {}
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


@pytest.fixture(scope="module")
def screenshot_dirs(tmp_path_factory) -> list[Path]:
    """Where screenshots go: the test's temporary folder, and `$XDYNA_ARTIFACTS/workflows` when that is set."""
    dirs = [tmp_path_factory.mktemp("workflow-screenshots")]
    if os.environ.get("XDYNA_ARTIFACTS"):
        dirs.append(Path(os.environ["XDYNA_ARTIFACTS"]) / "workflows")
        dirs[-1].mkdir(parents=True, exist_ok=True)
    return dirs


def test_the_server_lists_and_serves_the_examples(comfy_server):
    templates = comfy_server.get_json("/api/workflow_templates")
    assert sorted(templates.get(PACK, [])) == sorted(NAMES), templates
    for name in NAMES:
        assert comfy_server.get_json(f"/api/workflow_templates/{PACK}/{name}.json") == ui_file(name)
        with urllib.request.urlopen(f"{comfy_server.url}/api/workflow_templates/{PACK}/{name}.jpg") as response:
            assert response.headers["Content-Type"] == "image/jpeg"
            assert response.read(3) == b"\xff\xd8\xff"


@pytest.mark.parametrize("name", NAMES)
def test_api_file_is_the_description(staged, name):
    workflow = next(w for w in graphs.workflows() if w.name == name)
    assert api_file(name) == api.api_prompt(workflow, staged), REBUILD
    ui = ui_file(name)
    ui_types = {str(node["id"]): node["type"] for node in ui["nodes"]}
    assert ui_types == {str(i): node.type for node, i in zip(workflow.nodes, workflow.ids().values())}


def test_the_examples_follow_the_release_settings():
    for name in NAMES:
        prompt = api_file(name)
        by_class = {}
        for node in prompt.values():
            by_class.setdefault(node["class_type"], []).append(node["inputs"])
        (sampler,) = by_class["XDyna_TemporalSampler"]
        assert {k: sampler[k] for k in ("steps", "cfg", "sampler_name", "scheduler")} == {
            "steps": 25,
            "cfg": 7.5,
            "sampler_name": "ddim",
            "scheduler": "xdyna_ddim",
        }
        assert (sampler["window_length"], sampler["window_overlap"]) == (16, 4)
        assert isinstance(sampler["pose_images"], list), "the frame count must come from the pose images"
        assert [n["fps"] for n in by_class["CreateVideo"]] == [15.0]
        assert [n["text"] for n in by_class["CLIPTextEncode"]] == ["", ""]
        assert by_class["XDyna_LoadModel"][0]["ckpt_name"] == "unet-checkpoint-epoch-5.ckpt"
        assert by_class["XDyna_LoadReference"][0]["ip_adapter"] == "ip-adapter-plus_sd15.bin"
        controlnets = sorted(n["control_net_name"] for n in by_class["XDyna_LoadControlNet"])
        sizes = {(n["width"], n["height"]) for c in SIZED for n in by_class.get(c, [])}
        assert sizes == {(512, 896)}
        if name == "xdyna_pose_only":
            assert controlnets == ["controlnet-checkpoint-epoch-5.ckpt"]
            assert "XDyna_FaceCropper" not in by_class
        else:
            assert controlnets == ["controlnet-checkpoint-epoch-5.ckpt", "controlnet-face-checkpoint-epoch-2.ckpt"]
    long_video = {n["class_type"]: n["inputs"] for n in api_file("xdyna_long_video").values()}
    crop, sample = long_video["VideoTemporalCrop"], long_video["VideoFrameSample"]
    # uniform sampling of N frames from a clip of 2(N-1)+1 frames takes exactly every 2nd frame
    assert (sample["num_frames"], sample["strategy"], crop["length"]) == (192, "uniform", 2 * 191 + 1)


def test_the_template_browser_offers_the_examples_with_thumbnails(frontend):
    templates = frontend.evaluate(
        """async (pack) => {
            const pinia = document.querySelector('#vue-app').__vue_app__.config.globalProperties.$pinia;
            const store = pinia._s.get('workflowTemplates');
            await store.loadWorkflowTemplates();
            const ours = store.enhancedTemplates.filter((t) => t.sourceModule === pack);
            const out = {};
            for (const t of ours) {
                const response = await fetch(`/api/workflow_templates/${pack}/${t.name}.${t.mediaSubtype}`);
                const bitmap = await createImageBitmap(await response.blob());
                out[t.name] = [t.mediaSubtype, bitmap.width, bitmap.height];
            }
            return out;
        }""",
        PACK,
    )
    assert sorted(templates) == sorted(NAMES)
    for name, (subtype, width, height) in templates.items():
        assert subtype == "jpg" and width >= 320 and height >= 200, (name, subtype, width, height)


@pytest.mark.parametrize("name", NAMES)
def test_the_frontend_loads_the_workflow(frontend, staged, name, screenshot_dirs):
    workflow = ui_file(name)
    console_before = len(frontend.console)
    state = frontend.load_workflow(workflow, settle_s=1.5)

    assert state["storesFound"], "the front-end's error stores were not found (has the front-end changed?)"
    assert state["unregisteredTypes"] == []
    assert state["missingNodeTypes"] == []
    assert state["missingModels"] == []
    assert state["missingMedia"] == []
    assert state["nodesWithErrors"] == []
    assert state["nodeErrors"] is None
    assert state["nodeCount"] == len(workflow["nodes"])
    assert state["linkCount"] == len(workflow["links"])
    assert not [d for d in state["dialogs"] if "missing" in d.lower()], state["dialogs"]

    prompt = frontend.graph_to_prompt()
    expected = api_file(name)
    differences = api.prompt_differences(api.comparable(prompt, staged), api.comparable(expected, staged))
    assert differences == [], differences

    errors = [str(e) for e in frontend.console[console_before:] if e.kind in ("error", "pageerror")]
    assert [e for e in errors if not any(noise in e for noise in CONSOLE_NOISE)] == []
    shot = frontend.screenshot_graph(screenshot_dirs[0] / f"{name}.png")
    for folder in screenshot_dirs[1:]:
        (folder / shot.name).write_bytes(shot.read_bytes())


@pytest.mark.parametrize("name", NAMES)
def test_the_server_accepts_the_api_workflow(comfy_server, staged, name):
    status, answer = post_json(comfy_server.url + "/prompt", {"prompt": api_file(name), "client_id": "xdyna-tests"})
    if status == 200:
        take_off_the_queue(comfy_server, answer["prompt_id"])
    assert status == 200, f"{answer}\n{comfy_server.log()}"
    assert answer["node_errors"] == {}


def test_the_server_rejects_a_workflow_whose_file_is_missing(comfy_server, staged):
    prompt = copy.deepcopy(api_file("xdyna_full"))
    loader = next(nid for nid, node in prompt.items() if node["class_type"] == "XDyna_LoadModel")
    prompt[loader]["inputs"]["ckpt_name"] = "not-there.ckpt"
    status, answer = post_json(comfy_server.url + "/prompt", {"prompt": prompt})
    if status == 200:  # outputs that do not depend on the model (the condition previews) are still valid
        take_off_the_queue(comfy_server, answer["prompt_id"])
    assert loader in answer["node_errors"]
    assert "not-there.ckpt" in json.dumps(answer["node_errors"][loader])


def take_off_the_queue(server, prompt_id: str, timeout_s: float = 60.0) -> None:
    """Remove a queued prompt, or interrupt it if the worker took it already, and wait until it is gone."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        post_json(server.url + "/queue", {"delete": [prompt_id]})
        post_json(server.url + "/interrupt", {"prompt_id": prompt_id})
        queue = server.get_json("/queue")
        queued = [item[1] for item in queue["queue_running"] + queue["queue_pending"]]
        if prompt_id not in queued:
            return
        time.sleep(0.2)
    raise AssertionError(f"prompt {prompt_id} still queued after {timeout_s:.0f} s:\n{server.log()}")


def test_the_frontend_flags_a_missing_model_and_node(frontend):
    """The negative control of the load test: the same checks see a missing file and an unknown node type."""
    workflow = copy.deepcopy(ui_file("xdyna_pose_only"))
    loader = next(node for node in workflow["nodes"] if node["type"] == "XDyna_LoadModel")
    loader["widgets_values"][0] = "not-there.ckpt"
    loader.get("widgets_values_named", {})["ckpt_name"] = "not-there.ckpt"
    unknown = next(node for node in workflow["nodes"] if node["type"] == "XDyna_RenderPose")
    unknown["type"] = "XDyna_NoSuchNode"
    state = frontend.load_workflow(workflow, settle_s=1.5)
    assert [m["name"] for m in state["missingModels"]] == ["not-there.ckpt"]
    assert "XDyna_NoSuchNode" in json.dumps(state["missingNodeTypes"])
    assert str(loader["id"]) in [n.split(":")[0] for n in state["nodesWithErrors"]]


# --- what a new user sees: the missing-models panel and the zoom a template opens at ---------------------------


def model_widget_values(workflow: dict) -> set[str]:
    """File names in the workflow's widgets that the front-end treats as model files (its list: no .onnx)."""
    values = set()
    for node in workflow["nodes"]:
        widgets = node.get("widgets_values", [])
        values |= {v for v in (widgets.values() if isinstance(widgets, dict) else widgets) if isinstance(v, str)}
    return {v for v in values if v.endswith((".ckpt", ".safetensors", ".bin", ".pt", ".pth", ".sft"))}


def frontend_offers(frontend, node_type: str, widget: str, value: str) -> bool:
    return frontend.evaluate(
        "([type, name, value]) => LiteGraph.createNode(type).widgets.find((w) => w.name === name)"
        ".options.values.includes(value)",
        [node_type, widget, value],
    )


def refresh_models(frontend, present: bool) -> None:
    """Reload the node definitions (the model lists) and wait until the front-end sees the change."""
    frontend.command("Comfy.RefreshNodeDefinitions")
    deadline = time.monotonic() + 30
    while frontend_offers(frontend, "XDyna_LoadModel", "ckpt_name", graphs.UNET) != present:
        assert time.monotonic() < deadline, "the front-end did not pick up the changed model folders"
        frontend.page.wait_for_timeout(200)


@pytest.fixture
def models_absent(comfy_server, frontend):
    """No model file in the server's folders (renamed to an extension ComfyUI does not list), then back."""
    hidden = [path for path in comfy_server.models.rglob("*") if path.is_file()]
    for path in hidden:
        path.rename(path.with_name(path.name + ".hidden"))
    try:
        refresh_models(frontend, present=False)
        yield
    finally:
        for path in hidden:
            path.with_name(path.name + ".hidden").rename(path)
        refresh_models(frontend, present=True)


def test_without_the_models_the_frontend_names_each_files_folder_and_address(frontend, models_absent):
    expected = {w.local_name: (w.folder, w.remote.url) for w in WEIGHTS}
    for name in NAMES:
        workflow = ui_file(name)
        state = frontend.load_workflow(workflow, settle_s=1.5)
        shown = {m["name"]: (m.get("directory"), m.get("url")) for m in state["missingModels"]}
        assert set(shown) == model_widget_values(workflow), name
        assert shown == {file: expected[file] for file in shown}, name
        assert all(url.startswith("https://huggingface.co/") and "/resolve/main/" in url for _, url in shown.values())


def open_template(frontend, name: str) -> None:
    """Open a template as a user does: Templates, the pack's category, the card."""
    frontend.evaluate("() => app.graph.clear()")
    frontend.command("Comfy.BrowseTemplates")
    dialog = frontend.page.get_by_role("dialog")
    dialog.get_by_text(PACK, exact=True).first.click()
    frontend.page.wait_for_timeout(500)  # the card grid re-renders for the category
    dialog.get_by_text(name, exact=True).first.click()
    dialog.wait_for(state="detached", timeout=30_000)


VIEW_JS = """() => {
    app.canvas.draw(true, true);  // as the next frame would: low_quality is set while drawing
    const note = app.graph._nodes.find((n) => n.type === 'MarkdownNote');
    const [x, y, w, h] = app.canvas.visible_area, [nx, ny, nw, nh] = note.boundingRect;
    return {scale: app.canvas.ds.scale, lowQuality: app.canvas.low_quality, nodes: app.graph._nodes.length,
            noteInView: nx >= x && ny >= y && nx + nw <= x + w && ny + Math.min(nh, 300) <= y + h};
}"""


@pytest.mark.parametrize("name", NAMES)
def test_a_template_opens_where_its_text_is_drawn(frontend, staged, name):
    """The template browser fits a whole graph into view (about 35% here, no text drawn); the examples open on
    their read-me and inputs at a readable zoom instead, and a dropped file opens the same way."""
    workflow = ui_file(name)
    assert workflow["extra"][VIEW_KEY]["scale"] >= 0.6
    open_template(frontend, name)
    deadline = time.monotonic() + 10
    while (view := frontend.evaluate(VIEW_JS))["nodes"] != len(workflow["nodes"]) or view["scale"] < 0.6:
        if time.monotonic() > deadline:
            break
        frontend.page.wait_for_timeout(100)
    assert view["nodes"] == len(workflow["nodes"])
    assert view["scale"] >= 0.6 and not view["lowQuality"] and view["noteInView"], view
    frontend.load_workflow(workflow, settle_s=0.5)  # dropped onto the canvas: the saved view
    dropped = frontend.evaluate(VIEW_JS)
    assert dropped["scale"] == pytest.approx(workflow["extra"]["ds"]["scale"]) and dropped["noteInView"], dropped
