"""The pack's web folder in a real ComfyUI server and front-end: node help pages and the JS extension.

ComfyUI serves `WEB_DIRECTORY` (`web/`) under `/extensions/<pack folder>/`. Front-end 1.49 looks for a custom
node's help at `/extensions/<pack folder>/docs/<NodeId>/<locale>.md`, then `/extensions/<pack folder>/docs/
<NodeId>.md` (the pack folder taken from the node's `python_module`, `custom_nodes.<pack folder>`), and shows
it in the right side panel's Info tab; this pack ships the first form for English (`docs/<NodeId>/en.md`), so
the first request finds the page.
"""

from __future__ import annotations

import re
import urllib.request

from tests.conftest import REPO_ROOT
from tests.host.test_workflows import PACK, ui_file

DOCS = REPO_ROOT / "web" / "docs"
EXTENSION_URL = f"/extensions/{PACK}/js/xdyna.js"


def help_page(node_id: str):
    return DOCS / node_id / "en.md"


def pack_nodes(object_info: dict) -> dict[str, dict]:
    return {name: info for name, info in object_info.items() if info["category"].split("/")[0] == "X-Dyna"}


def fetch_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.status == 200
        return response.read().decode("utf-8")


def test_every_node_has_a_help_page_that_the_server_serves(comfy_server):
    nodes = pack_nodes(comfy_server.get_json("/object_info"))
    assert len(nodes) >= 13, sorted(nodes)
    missing = sorted(name for name in nodes if not help_page(name).is_file())
    assert missing == [], f"nodes without web/docs/<NodeId>/en.md: {missing}"
    for name, info in nodes.items():
        assert info["python_module"] == f"custom_nodes.{PACK}", "the front-end derives the docs URL from this"
        text = help_page(name).read_text(encoding="utf-8")
        assert fetch_text(f"{comfy_server.url}/extensions/{PACK}/docs/{name}/en.md") == text
        assert text.splitlines()[0] == f"# {info['display_name']}", f"{name}: the page's title is not the node's name"
        names = [n for section in ("required", "optional") for n in info["input"].get(section, {})]
        names += [n for n in info["output_name"] if n.lower() == n]  # named outputs (not bare type names)
        undocumented = [n for n in names if not re.search(rf"\b{re.escape(n)}\b", text)]
        assert undocumented == [], f"{name}: inputs/outputs not described in its help page: {undocumented}"


def test_no_help_page_without_a_node(comfy_server):
    nodes = pack_nodes(comfy_server.get_json("/object_info"))
    pages = [p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*") if p.is_file()]
    orphans = sorted(p for p in pages if p.split("/")[0] not in nodes or not p.endswith("/en.md"))
    assert orphans == [], f"help files that are not web/docs/<NodeId>/en.md of a node the server has: {orphans}"


def test_the_frontend_shows_the_help_page_from_its_first_request(frontend):
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
    assert requests == [(200, f"{frontend.url}/extensions/{PACK}/docs/XDyna_TemporalSampler/en.md")]


# --- the JS extension -------------------------------------------------------------------------------------


def node_id(workflow: dict, node_type: str) -> int:
    return next(node["id"] for node in workflow["nodes"] if node["type"] == node_type)


def test_the_extension_loads_without_errors(comfy_server, frontend):
    assert EXTENSION_URL in comfy_server.get_json("/extensions")
    assert frontend.evaluate("() => app.extensions.some((e) => e.name === 'xdyna.helpers')")
    refused = set(frontend.blocked)  # requests to outside hosts, aborted by the harness (no network here)
    errors = [str(e) for e in frontend.errors() if "xdyna" in f"{e.text} {e.url}".lower() and e.url not in refused]
    assert errors == []
    assert not [e for e in frontend.console if e.kind == "pageerror"]


def test_frames_widget_follows_the_pose_images_link(frontend):
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


def test_a_differing_generation_size_is_flagged(frontend):
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


CHECK_WEIGHTS_IN_THE_BROWSER = """async () => {
    app.graph.clear();
    app.canvas.ds.scale = 1;
    app.canvas.ds.offset = [0, 0];
    const node = LiteGraph.createNode('XDyna_CheckWeights');
    app.graph.add(node);
    node.pos = [80, 80];
    app.canvas.setDirty(true, true);
    await app.queuePrompt(0, 1);
    const box = () => document.querySelector('textarea.xdyna-weights-report');
    for (let i = 0; i < 300 && !box()?.value; i++) await new Promise((r) => setTimeout(r, 100));
    await new Promise((r) => requestAnimationFrame(r));
    const shown = box(), rect = shown?.getBoundingClientRect(), style = shown && getComputedStyle(shown);
    const [x, y] = app.canvas.ds.convertOffsetToCanvas([node.pos[0], node.pos[1]]);
    const canvas = app.canvas.canvas.getBoundingClientRect();
    return {
        id: String(node.id),
        text: shown?.value ?? null,
        visible: !!shown && style.display !== 'none' && style.visibility !== 'hidden' && rect.width > 100 && rect.height > 60,
        onTheNode: !!rect && rect.left >= canvas.left + x - 1 && rect.right <= canvas.left + x + node.size[0] + 1
            && rect.top >= canvas.top + y - 1 && rect.bottom <= canvas.top + y + node.size[1] + 1,
        widgetsValues: node.serialize().widgets_values,
        prompt: (await app.graphToPrompt()).output,
    };
}"""


def test_the_weights_report_is_shown_on_the_check_weights_node(comfy_server, frontend, staged):
    """Queued from the front-end, X-Dyna Check Weights shows its report on the node (and as its STRING output)."""
    info = comfy_server.get_json("/object_info/XDyna_CheckWeights")["XDyna_CheckWeights"]
    assert info["output"] == ["STRING"] and info["output_node"]
    before = set(comfy_server.get_json("/history"))
    shown = frontend.evaluate(CHECK_WEIGHTS_IN_THE_BROWSER)
    (prompt_id,) = set(comfy_server.get_json("/history")) - before
    (report,) = comfy_server.get_json(f"/history/{prompt_id}")[prompt_id]["outputs"][shown["id"]]["text"]
    assert report.startswith("X-Dyna weights: ") and str(comfy_server.models) in report
    assert shown["text"] == report
    assert shown["visible"] and shown["onTheNode"], shown
    # the report is display only: neither saved with the workflow nor sent as an input
    assert shown["widgetsValues"] == [False]
    assert shown["prompt"][shown["id"]]["inputs"] == {"download_missing": False}
