"""The pack's web folder in a real ComfyUI server and front-end: node help pages and the JS extension.

ComfyUI serves `WEB_DIRECTORY` (`web/`) under `/extensions/<pack folder>/`. Front-end 1.49 looks for a custom
node's help at `/extensions/<pack folder>/docs/<NodeId>/<locale>.md`, then `/extensions/<pack folder>/docs/
<NodeId>.md` (the pack folder taken from the node's `python_module`, `custom_nodes.<pack folder>`), and shows
it in the right side panel's Info tab; this pack ships the second form.
"""

from __future__ import annotations

import re
import urllib.request

from tests.conftest import REPO_ROOT
from tests.host.test_workflows import PACK, frontend, staged, ui_file  # noqa: F401  (fixtures)

DOCS = REPO_ROOT / "web" / "docs"
EXTENSION_URL = f"/extensions/{PACK}/js/xdyna.js"


def pack_nodes(object_info: dict) -> dict[str, dict]:
    return {name: info for name, info in object_info.items() if info["category"].split("/")[0] == "X-Dyna"}


def fetch_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.status == 200
        return response.read().decode("utf-8")


def test_every_node_has_a_help_page_that_the_server_serves(comfy_server):
    nodes = pack_nodes(comfy_server.get_json("/object_info"))
    assert len(nodes) >= 13, sorted(nodes)
    missing = sorted(name for name in nodes if not (DOCS / f"{name}.md").is_file())
    assert missing == [], f"nodes without web/docs/<NodeId>.md: {missing}"
    for name, info in nodes.items():
        assert info["python_module"] == f"custom_nodes.{PACK}", "the front-end derives the docs URL from this"
        text = (DOCS / f"{name}.md").read_text(encoding="utf-8")
        assert fetch_text(f"{comfy_server.url}/extensions/{PACK}/docs/{name}.md") == text
        assert text.splitlines()[0] == f"# {info['display_name']}", f"{name}: the page's title is not the node's name"
        names = [n for section in ("required", "optional") for n in info["input"].get(section, {})]
        names += [n for n in info["output_name"] if n.lower() == n]  # named outputs (not bare type names)
        undocumented = [n for n in names if not re.search(rf"\b{re.escape(n)}\b", text)]
        assert undocumented == [], f"{name}: inputs/outputs not described in its help page: {undocumented}"


def test_no_help_page_without_a_node(comfy_server):
    nodes = pack_nodes(comfy_server.get_json("/object_info"))
    orphans = sorted(p.stem for p in DOCS.glob("*.md") if p.stem not in nodes)
    assert orphans == [], f"help pages for nodes the server does not have: {orphans}"


def test_the_frontend_shows_the_help_page(frontend):  # noqa: F811
    requests: list[tuple[int, str]] = []

    def on_response(response) -> None:
        if "/docs/" in response.url:
            requests.append((response.status, response.url))

    frontend.page.on("response", on_response)
    try:
        shown = frontend.evaluate(
            """async () => {
                const pinia = document.querySelector('#vue-app').__vue_app__.config.globalProperties.$pinia;
                app.graph.clear();
                const node = LiteGraph.createNode('XDyna_TemporalSampler');
                app.graph.add(node);
                app.canvas.selectNode(node);
                const panel = pinia._s.get('rightSidePanel');
                panel.openPanel('info');
                for (let i = 0; i < 50 && !document.body.innerText.includes('Time grows with the number of windows'); i++)
                    await new Promise((r) => setTimeout(r, 100));
                const text = document.body.innerText;
                panel.closePanel();
                return {open: panel.isOpen, found: text.includes('Time grows with the number of windows')};
            }"""
        )
    finally:
        frontend.page.remove_listener("response", on_response)
    assert shown["found"], f"the help panel did not show the page; docs requests: {requests}"
    assert (200, f"{frontend.url}/extensions/{PACK}/docs/XDyna_TemporalSampler.md") in requests


# --- the JS extension -------------------------------------------------------------------------------------


def node_id(workflow: dict, node_type: str) -> int:
    return next(node["id"] for node in workflow["nodes"] if node["type"] == node_type)


def test_the_extension_loads_without_errors(comfy_server, frontend):  # noqa: F811
    assert EXTENSION_URL in comfy_server.get_json("/extensions")
    assert frontend.evaluate("() => app.extensions.some((e) => e.name === 'xdyna.helpers')")
    errors = [str(e) for e in frontend.errors() if "xdyna" in f"{e.text} {e.url}".lower() and "/docs/" not in e.url]
    assert errors == []
    assert not [e for e in frontend.console if e.kind == "pageerror"]


def test_frames_widget_follows_the_pose_images_link(frontend):  # noqa: F811
    workflow = ui_file("xdyna_full")
    frontend.load_workflow(workflow, settle_s=0.5)
    sampler = node_id(workflow, "XDyna_TemporalSampler")
    frames = """(id) => { const w = app.graph.getNodeById(id).widgets.find((w) => w.name === 'frames');
                          return [w.disabled, w.label ?? null]; }"""
    assert frontend.evaluate(frames, sampler) == [True, "frames (from pose_images)"]
    frontend.evaluate(
        """(id) => { const node = app.graph.getNodeById(id);
                     node.disconnectInput(node.inputs.findIndex((i) => i.name === 'pose_images')); }""",
        sampler,
    )
    assert frontend.evaluate(frames, sampler) == [False, None]


def test_a_differing_generation_size_is_flagged(frontend):  # noqa: F811
    workflow = ui_file("xdyna_full")
    frontend.load_workflow(workflow, settle_s=0.5)
    render = node_id(workflow, "XDyna_RenderPose")
    badges = """() => app.graph._nodes.filter((n) => (n.badges ?? []).some((b) => b?.xdynaSizeBadge))
                                     .map((n) => [String(n.id), n.badges.find((b) => b?.xdynaSizeBadge).text])"""
    set_width = """([id, value]) => { const node = app.graph.getNodeById(id);
                                       const w = node.widgets.find((w) => w.name === 'width');
                                       w.value = value; w.callback?.(value, app.canvas, node); }"""
    assert frontend.evaluate(badges) == []

    frontend.evaluate(set_width, [render, 256])
    frontend.page.wait_for_timeout(300)
    assert frontend.evaluate(badges) == [[str(render), "⚠ 256×896, not 512×896"]]
    toast = frontend.page.locator(".p-toast-message", has_text="generation sizes differ")
    toast.first.wait_for(timeout=5000)
    assert "X-Dyna Render Pose" in toast.first.inner_text()

    frontend.evaluate(set_width, [render, 512])
    frontend.page.wait_for_timeout(300)
    assert frontend.evaluate(badges) == []
