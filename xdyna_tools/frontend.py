"""Drive ComfyUI's real front-end in headless Chromium: load workflows, read its error state, take screenshots.

Used by the example-workflow build (`xdyna_tools.examples`) and the host tests' front-end checks.

The browser is Debian's Chromium (`/usr/bin/chromium`), driven by Playwright's Python client (its wheel
carries the driver; no browser is downloaded). It is started with the flags this machine needs (no sandbox as
root, no GPU, no background network) and a new empty profile. Every request that leaves loopback is
aborted, so the front-end's update checks and model-size look-ups fail at once instead of timing out.

The front-end is a Vue app around LiteGraph; `window.app` is ComfyUI's app object and its Pinia stores
(missing nodes, missing models, missing media, execution errors) say what it would show a user.
"""

from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "[::1]", "::1"}

# Settings of a fresh profile that would otherwise put a template browser or tutorial over the canvas, and
# the front-end's own schema check of loaded workflows (off by default).
FRONTEND_SETTINGS = {
    "Comfy.TutorialCompleted": True,
    "Comfy.Validation.Workflows": True,
    "Comfy.Minimap.Visible": False,
}

READY_JS = """() => !!(window.app && window.app.graph && window.app.canvas && window.LiteGraph
    && Object.keys(window.LiteGraph.registered_node_types).length > 0
    && !document.querySelector('#splash-loader'))"""

# What the front-end would show a user about the loaded graph, read from its Pinia stores and the graph.
ERROR_STATE_JS = """() => {
    const pinia = document.querySelector('#vue-app')?.__vue_app__?.config?.globalProperties?.$pinia;
    const store = (id) => pinia?._s?.get(id);
    const plain = (value) => JSON.parse(JSON.stringify(value ?? null));
    const missingNodes = store('missingNodesError')?.missingNodesError;
    const executionError = store('executionError');
    const nodes = app.graph._nodes;
    return {
        storesFound: !!(pinia && store('missingNodesError') && store('missingModel') && store('missingMedia')),
        missingNodeTypes: plain(missingNodes?.nodeTypes ?? []),
        missingModels: plain(store('missingModel')?.missingModelCandidates ?? []),
        missingMedia: plain(store('missingMedia')?.missingMediaCandidates ?? []),
        nodeErrors: plain(executionError?.lastNodeErrors ?? null),
        unregisteredTypes: nodes.map((n) => n.type).filter((t) => !(t in LiteGraph.registered_node_types)),
        nodesWithErrors: nodes.filter((n) => n.has_errors).map((n) => `${n.id}:${n.type}`),
        nodeCount: nodes.length,
        linkCount: app.graph.links instanceof Map ? app.graph.links.size : Object.keys(app.graph.links ?? {}).length,
        dialogs: [...document.querySelectorAll('.p-dialog')].map((d) => d.innerText.slice(0, 300)),
    };
}"""


@dataclass
class ConsoleEntry:
    kind: str
    text: str
    url: str = ""

    def __str__(self) -> str:
        return f"[{self.kind}] {self.text} ({self.url})" if self.url else f"[{self.kind}] {self.text}"


@dataclass
class FrontEnd:
    """One headless Chromium with ComfyUI's front-end open; use as a context manager.

    `console` collects console messages and uncaught page errors, `blocked` the requests that tried to leave
    loopback.
    """

    url: str
    profile_dir: Path
    viewport: tuple[int, int] = (1600, 1000)
    console: list[ConsoleEntry] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)

    def __enter__(self) -> FrontEnd:
        from playwright.sync_api import sync_playwright

        self._playwright = sync_playwright().start()
        try:
            self.context = self._playwright.chromium.launch_persistent_context(
                str(self.profile_dir),
                executable_path=str(CHROMIUM),
                headless=True,
                args=CHROMIUM_ARGS,
                viewport={"width": self.viewport[0], "height": self.viewport[1]},
            )
        except Exception:
            self._playwright.stop()
            raise
        self.page = self.context.pages[0] if self.context.pages else self.context.new_page()
        self.context.route("**/*", self._route)
        self.page.on("console", self._on_console)
        self.page.on("pageerror", lambda error: self.console.append(ConsoleEntry("pageerror", str(error))))
        return self

    def __exit__(self, *exc) -> None:
        self.context.close()
        self._playwright.stop()

    def _route(self, route) -> None:
        host = urlparse(route.request.url).hostname or ""
        if route.request.url.startswith(("data:", "blob:")) or host in LOOPBACK_HOSTS:
            route.continue_()
        else:
            self.blocked.append(route.request.url)
            route.abort()

    def _on_console(self, message) -> None:
        location = message.location or {}
        self.console.append(ConsoleEntry(message.type, message.text, location.get("url", "")))

    def open(self, timeout_s: float = 90.0) -> None:
        """Load the front-end and wait until the app, its graph, the canvas and the node definitions are up."""
        self.page.goto(self.url, wait_until="load", timeout=timeout_s * 1000)
        self.page.wait_for_function(READY_JS, timeout=timeout_s * 1000)

    def evaluate(self, script: str, arg: Any = None) -> Any:
        return self.page.evaluate(script, arg)

    def load_workflow(self, workflow: dict, settle_s: float = 1.0) -> dict:
        """Load a UI-format workflow as a user's drop would (`app.loadGraphData`); return the error state."""
        self.page.evaluate("async (wf) => { await app.loadGraphData(wf, true, true, null); }", workflow)
        self.page.wait_for_timeout(settle_s * 1000)
        return self.error_state()

    def error_state(self) -> dict:
        return self.page.evaluate(ERROR_STATE_JS)

    def graph_to_prompt(self) -> dict:
        """The API-format prompt the front-end would queue for the current graph (`app.graphToPrompt`)."""
        return self.page.evaluate("async () => (await app.graphToPrompt()).output")

    def serialize_graph(self) -> dict:
        return self.page.evaluate("() => app.graph.serialize()")

    def command(self, command_id: str) -> None:
        """Run one of the front-end's registered commands (menu entries, keyboard shortcuts)."""
        self.page.evaluate("async (id) => { await app.extensionManager.command.execute(id); }", command_id)

    def fit_view(self, focus_mode: bool = False) -> None:
        """Zoom and pan the canvas so that every node is in view; `focus_mode` hides the menus and side bars."""
        if focus_mode:
            self.command("Workspace.ToggleFocusMode")
            self.page.wait_for_timeout(500)  # the canvas resizes to the freed space
        self.command("Comfy.Canvas.FitView")
        self.page.evaluate("() => { app.canvas.setDirty(true, true); app.canvas.draw(true, true); }")
        self.page.wait_for_timeout(500)

    def graph_clip(self, margin: int = 12) -> dict:
        """The page rectangle (CSS pixels) that shows every node and group of the graph, as a screenshot clip."""
        return self.page.evaluate(
            """(margin) => {
                const boxes = [...app.graph._nodes.map((n) => n.boundingRect),
                               ...(app.graph._groups ?? []).map((g) => [g.pos[0], g.pos[1], g.size[0], g.size[1]])];
                const x0 = Math.min(...boxes.map((b) => b[0])), y0 = Math.min(...boxes.map((b) => b[1]));
                const x1 = Math.max(...boxes.map((b) => b[0] + b[2])), y1 = Math.max(...boxes.map((b) => b[1] + b[3]));
                const ds = app.canvas.ds, rect = app.canvas.canvas.getBoundingClientRect();
                const [left, top] = ds.convertOffsetToCanvas([x0, y0]);
                const [right, bottom] = ds.convertOffsetToCanvas([x1, y1]);
                const x = Math.max(rect.left, rect.left + left - margin), y = Math.max(rect.top, rect.top + top - margin);
                return {x, y, width: Math.min(rect.right, rect.left + right + margin) - x,
                        height: Math.min(rect.bottom, rect.top + bottom + margin) - y};
            }""",
            margin,
        )

    def leave_focus_mode(self) -> None:
        self.command("Workspace.ToggleFocusMode")

    def screenshot(self, path: Path, clip: dict | None = None) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(path), clip=clip)
        return path

    def screenshot_graph(self, path: Path, viewport: tuple[int, int] = (2400, 2400)) -> Path:
        """A picture of the whole graph without the menus: in a viewport large enough that the fitted graph is
        drawn at a zoom where LiteGraph still draws widgets and note text, cropped to the graph."""
        self.page.set_viewport_size({"width": viewport[0], "height": viewport[1]})
        try:
            self.page.wait_for_timeout(300)
            self.fit_view(focus_mode=True)
            self.screenshot(path, clip=self.graph_clip())
            self.leave_focus_mode()
        finally:
            self.page.set_viewport_size({"width": self.viewport[0], "height": self.viewport[1]})
        return path

    def errors(self, ignore: tuple[str, ...] = ()) -> list[ConsoleEntry]:
        """Console errors and page errors, less those whose text or URL contains one of `ignore`."""
        return [
            entry
            for entry in self.console
            if entry.kind in ("error", "pageerror") and not any(part in f"{entry.text} {entry.url}" for part in ignore)
        ]


def chromium_unavailable() -> str | None:
    """Why the front-end cannot be driven here (a reason to skip), or None."""
    if not CHROMIUM.is_file():
        return f"{CHROMIUM} not found: install Debian's chromium (apt-get install -y chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright Python package is not installed (python -m pip install -r requirements-test.txt)"
    return None


def post_settings(server_url: str, settings: dict[str, Any] = FRONTEND_SETTINGS) -> None:
    """Store front-end settings for the server's default user (what the settings dialog would save)."""
    request = urllib.request.Request(
        server_url + "/api/settings",
        data=json.dumps(settings).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        response.read()
