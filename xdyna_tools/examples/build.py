"""Writes the example workflows in both of ComfyUI's formats, with their thumbnails.

    python -m xdyna_tools.examples [--assets DIR] [--out DIR]

(from the pack's folder). It needs a ComfyUI checkout (`COMFYUI_PATH`, see `comfy_launch.find_comfyui`), Debian's
Chromium with the playwright package (`xdyna_tools.frontend`), and the official example assets
(`reference_1.png`, `driving_1.mp4`, `pose_1.mp4` from the X-Dyna release's `assets/`): `--assets`,
`XDYNA_SHARED_DATA` or `../shared/data`. Without them it stops with a message; it never substitutes stand-ins,
since the loaders' previews set the nodes' sizes and the assets make the thumbnails.

From the one description in `graphs.py`:

- `api/<name>.json` (API format) is computed in Python from the node schemas of `/object_info` (`api.py`);
- `<name>.json` (UI format) is made by the real front-end: a headless Chromium creates each node with
  `LiteGraph.createNode`, sets its widgets, links it, lays the groups out and serialises the graph, so slot
  types, widget order, dynamic widgets (Save Video's format/codec) and ids are the front-end's own; each model
  loader carries `properties.models` (file, link, folder) and the graph the view it opens at;
- `<name>.jpg` is the template card's picture: the example's inputs and conditions with its caption.

The build checks that the front-end's own API conversion of the UI graph (`app.graphToPrompt`) equals the
Python one, and `tests/host/test_workflows.py` checks the committed files the same way, so the two formats
cannot drift apart.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from xdyna_core.weights_manifest import FOLDER_DEFAULTS, WEIGHTS

from ..cli import say
from .api import api_prompt, comparable, prompt_differences
from .graphs import DRIVING_VIDEO, INPUT_FILES, REFERENCE_IMAGE, Workflow, model_metadata, workflows

PACK_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES_DIR = PACK_ROOT / "example_workflows"
POSE_VIDEO = "pose_1.mp4"  # the release's pose rendering of driving_1.mp4 (thumbnails only)
ASSET_FILES = (*INPUT_FILES, POSE_VIDEO)
VIEW_KEY = "xdyna_view"  # web/js/xdyna.js reads it
OPEN_SCALE = 0.8  # LiteGraph draws widget and note text from about 0.6
VIEW_MARGIN = 30
logger = logging.getLogger("xdyna.workflows")


class BuildError(RuntimeError):
    """Something the build needs is missing; the message says what and how to provide it."""


def default_assets_dir() -> Path:
    return Path(os.environ.get("XDYNA_SHARED_DATA") or PACK_ROOT.parent / "shared" / "data")


def check_assets(assets: Path) -> Path:
    """`assets` if it holds every example asset, else a `BuildError` naming the missing ones and their source."""
    missing = [name for name in ASSET_FILES if not (Path(assets) / name).is_file()]
    if missing:
        raise BuildError(
            f"the example assets {', '.join(missing)} are not in {assets}. They are the official X-Dyna "
            "release's example assets (bytedance/X-Dyna assets/, Apache-2.0); pass --assets DIR or set "
            "XDYNA_SHARED_DATA to the folder holding them. The build does not substitute stand-ins (the "
            "loaders' previews size the nodes, and the assets make the thumbnails)."
        )
    return Path(assets)


# --- UI format, made by the front-end ------------------------------------------------------------------------

CREATE_JS = """async ({nodes, models}) => {
    app.graph.clear();
    window.__xdynaBuild = {};
    const made = window.__xdynaBuild;
    for (const d of nodes) {
        const node = LiteGraph.createNode(d.type);
        if (!node) throw new Error(`the front-end does not know the node type ${d.type}`);
        if (d.title) node.title = d.title;
        app.graph.add(node);
        for (const [name, value] of Object.entries(d.widgets)) {
            const widget = node.widgets?.find((w) => w.name === name);
            if (!widget) throw new Error(`${d.type} has no widget ${name}: ${node.widgets?.map((w) => w.name)}`);
            widget.value = value;
            widget.callback?.(widget.value, app.canvas, node);  // dynamic combos add their option's widgets here
        }
        for (const widget of node.widgets ?? []) if (widget.name === 'control_after_generate') widget.value = 'fixed';
        // folder and link of each model file a widget names, for the front-end's missing-models panel
        const named = (node.widgets ?? []).filter((w) => Object.hasOwn(models, w.value)).map((w) => models[w.value]);
        if (named.length) node.properties.models = named;
        made[d.key] = node;
    }
    for (const d of nodes) {
        for (const [input, [source, output]] of Object.entries(d.links)) {
            const from = made[source], to = made[d.key];
            const o = from.outputs.findIndex((s) => s.name === output);
            const i = to.inputs.findIndex((s) => s.name === input);
            if (o < 0 || i < 0) throw new Error(`no slot for ${source}.${output} -> ${d.key}.${input}`);
            if (!from.connect(o, to, i)) throw new Error(`the front-end refused ${source}.${output} -> ${d.key}.${input}`);
        }
    }
}"""

# Run once the previews of the loaders have loaded (they grow their nodes): groups in rows, each group's nodes
# in columns, stacked by their drawn size.
LAYOUT_JS = """async ({nodes, groups}) => {
    const GAP = 40, PAD = 30, TITLE = LiteGraph.NODE_TITLE_HEIGHT, GROUP_TITLE = 60, MIN_WIDTH = 300;
    const made = window.__xdynaBuild;
    for (const d of nodes) {
        const node = made[d.key], [width, height] = d.size ?? [MIN_WIDTH, 0];
        node.setSize([Math.max(width, node.size[0]), Math.max(height, node.size[1])]);
    }
    let y = 0;
    for (const row of [...new Set(groups.map((g) => g.row))].sort()) {
        let x = 0, rowHeight = 0;
        for (const g of groups.filter((g) => g.row === row)) {
            const members = nodes.filter((d) => d.group === g.key);
            if (!members.length) continue;
            let cx = x + PAD, bottom = 0;
            for (const column of [...new Set(members.map((d) => d.column))].sort((a, b) => a - b)) {
                let cy = y + GROUP_TITLE + TITLE, width = 0;
                for (const d of members.filter((d) => d.column === column)) {
                    const node = made[d.key];
                    node.pos = [cx, cy];
                    cy += node.size[1] + TITLE + GAP;
                    width = Math.max(width, node.size[0]);
                }
                bottom = Math.max(bottom, cy);
                cx += width + GAP;
            }
            const group = new LiteGraph.LGraphGroup(g.title, undefined);
            group.color = g.color;
            group.font_size = 24;
            app.graph.add(group);
            group.pos = [x, y];
            group.size = [cx - GAP + PAD - x, bottom - GAP + PAD - y];
            x = cx - GAP + PAD + 2 * GAP;
            rowHeight = Math.max(rowHeight, bottom - y);
        }
        y += rowHeight + 2 * GAP;
    }
    app.canvas.setDirty(true, true);
    delete window.__xdynaBuild;
    return app.graph.serialize();
}"""


def _strip_nulls(value: Any) -> Any:
    """The front-end writes every optional slot field as null; drop those (it reads them back as absent)."""
    if isinstance(value, dict):
        return {k: _strip_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_strip_nulls(v) for v in value]
    return value


def ui_description(workflow: Workflow) -> dict:
    return {
        "nodes": [
            {
                "key": n.key,
                "type": n.type,
                "group": n.group,
                "column": n.column,
                "widgets": n.widgets,
                "links": n.links,
                "title": n.title,
                "size": n.size,
            }
            for n in workflow.nodes
        ],
        "groups": [
            {"key": key, "title": g.title, "row": g.row, "color": g.color} for key, g in workflow.groups.items()
        ],
        "models": model_metadata(),
    }


def open_view(graph: dict) -> dict:
    """Where the workflow opens: the first group (the read-me and the inputs) at the top left, at `OPEN_SCALE`.

    `top_left` is the graph point shown at the canvas's top left; web/js/xdyna.js applies it when the workflow
    is opened from the template browser (which would otherwise fit the whole graph, at about 35%), and
    `extra.ds` says the same for a dropped file.
    """
    first = min(graph.get("groups", []), key=lambda g: (g["bounding"][1], g["bounding"][0]), default=None)
    x, y = (first["bounding"][0], first["bounding"][1]) if first else (0, 0)
    top_left = [x - VIEW_MARGIN, y - VIEW_MARGIN]
    return {"scale": OPEN_SCALE, "top_left": top_left}


def ui_workflow(frontend, workflow: Workflow) -> dict:
    description = ui_description(workflow)
    frontend.evaluate(CREATE_JS, description)
    frontend.page.wait_for_timeout(1500)
    graph = frontend.evaluate(LAYOUT_JS, description)
    graph = _strip_nulls(graph)
    view = open_view(graph)
    extra = graph.setdefault("extra", {})
    extra["ds"] = {"scale": view["scale"], "offset": [-view["top_left"][0], -view["top_left"][1]]}
    extra[VIEW_KEY] = view
    return graph


# --- what the widgets name, where the server looks for it -----------------------------------------------------


def stage_models(models_dir: Path) -> None:
    """An empty placeholder for every model file of the weights table, in its ComfyUI folder: the server's
    validation and the front-end's missing-model check look at names only."""
    for weight in WEIGHTS:
        folder = Path(models_dir) / FOLDER_DEFAULTS[weight.folder]
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / weight.local_name
        if not target.exists():
            target.write_bytes(b"")


def stage_inputs(input_dir: Path, assets: Path) -> None:
    """The example assets the loaders name, copied into the server's input folder."""
    Path(input_dir).mkdir(parents=True, exist_ok=True)
    for name in INPUT_FILES:
        (Path(input_dir) / name).write_bytes((Path(assets) / name).read_bytes())


# --- thumbnails ----------------------------------------------------------------------------------------------

THUMBNAIL_SIZE = (640, 640)  # the template browser crops its cards to about square
BACKGROUND, INK, MUTED = (24, 24, 27), (240, 240, 240), (170, 170, 178)


def _frames(video: Path, indices: list[int]):
    import av

    wanted, frames = set(indices), {}
    with av.open(str(video)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i in wanted:
                frames[i] = frame.to_image().convert("RGB")
            if len(frames) == len(wanted):
                break
    return [frames[i] for i in indices if i in frames]


def _frame_count(video: Path) -> int:
    import av

    with av.open(str(video)) as container:
        return sum(1 for _ in container.decode(video=0))


def _fit(image, width: int, height: int):
    """`image` scaled to fit a width × height box."""
    scale = min(width / image.width, height / image.height)
    return image.resize((round(image.width * scale), round(image.height * scale)))


def _wrap(draw, text: str, font, width: int) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        candidate = f"{line} {word}".strip()
        if line and draw.textlength(candidate, font=font) > width:
            lines.append(line)
            line = word
        else:
            line = candidate
    return [*lines, line]


def thumbnail(workflow: Workflow, assets: Path, path: Path) -> None:
    """The card picture: what goes in (reference, driving frames), what conditions it (pose) and the caption."""
    from PIL import Image, ImageDraw, ImageFont

    width, height = THUMBNAIL_SIZE
    margin, gap, band = 24, 16, 150
    area = (width - 2 * margin, height - band - 2 * margin)  # above the caption band
    card = Image.new("RGB", THUMBNAIL_SIZE, BACKGROUND)
    draw = ImageDraw.Draw(card)
    reference = Image.open(assets / REFERENCE_IMAGE).convert("RGB")
    n = _frame_count(assets / DRIVING_VIDEO)
    if workflow.name.endswith("long_video"):  # the reference, then a contact sheet of the long driving clip
        columns, rows = 3, 2
        first = _fit(reference, area[0], area[1])
        card.paste(first, (margin, margin))
        left = margin + first.width + gap
        cell = ((width - margin - left - (columns - 1) * 6) // columns, (area[1] - (rows - 1) * 6) // rows)
        picks = [round(i * 0.9 * (n - 1) / (columns * rows - 1)) for i in range(columns * rows)]  # before the fade-out
        for k, frame in enumerate(_frames(assets / DRIVING_VIDEO, picks)):
            tile = _fit(frame, *cell)
            card.paste(tile, (left + (k % columns) * (cell[0] + 6), margin + (k // columns) * (cell[1] + 6)))
    else:  # reference, driving frame and its pose (or reference and pose)
        middle = n // 2
        pose = _frames(assets / POSE_VIDEO, [min(middle, _frame_count(assets / POSE_VIDEO) - 1)])[0]
        row = (
            [reference, pose]
            if "pose_only" in workflow.name
            else [reference, _frames(assets / DRIVING_VIDEO, [middle])[0], pose]
        )
        box = ((area[0] - (len(row) - 1) * gap) // len(row), area[1])
        tiles = [_fit(image, *box) for image in row]
        x = (width - sum(t.width for t in tiles) - (len(tiles) - 1) * gap) // 2
        for tile in tiles:
            card.paste(tile, (x, margin + (area[1] - tile.height) // 2))
            x += tile.width + gap
    draw.rectangle([0, height - band, width, height], fill=(36, 36, 42))
    draw.text((margin, height - band + 14), workflow.caption, font=ImageFont.load_default(size=52), fill=INK)
    small = ImageFont.load_default(size=22)
    for i, line in enumerate(_wrap(draw, workflow.summary, small, width - 2 * margin)[:2]):
        draw.text((margin, height - band + 80 + 28 * i), line, font=small, fill=MUTED)
    path.parent.mkdir(parents=True, exist_ok=True)
    card.save(path, quality=85, optimize=True)


# --- the build -------------------------------------------------------------------------------------------------


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def build(out_dir: Path = EXAMPLES_DIR, assets: Path | None = None) -> None:
    """Write every example into `out_dir` (UI and API JSON, thumbnail); raises `BuildError` when something the
    build needs is missing, before anything is written."""
    from ..comfy_launch import ComfyServer, find_comfyui
    from ..frontend import FrontEnd, chromium_unavailable, post_settings

    assets = check_assets(assets or default_assets_dir())
    comfy, where = find_comfyui()
    if comfy is None:
        raise BuildError(f"the build runs the real front-end and needs ComfyUI: {where}")
    if chromium_unavailable():
        raise BuildError(f"the build runs the real front-end: {chromium_unavailable()}")
    with tempfile.TemporaryDirectory() as tmp:
        server = ComfyServer(comfy, Path(tmp) / "server").prepare()
        stage_models(server.models)
        stage_inputs(server.input_dir, assets)
        server.start()
        try:
            post_settings(server.url)
            object_info = server.get_json("/object_info")
            with FrontEnd(server.url, Path(tmp) / "profile") as frontend:
                frontend.open()
                for workflow in workflows():
                    api = api_prompt(workflow, object_info)
                    graph = ui_workflow(frontend, workflow)
                    state = frontend.load_workflow(graph)
                    converted = frontend.graph_to_prompt()
                    if comparable(converted, object_info) != comparable(api, object_info):
                        differences = prompt_differences(comparable(converted, object_info), api)
                        raise BuildError(f"{workflow.name}: the front-end's API prompt differs: {differences}")
                    problems = {k: v for k, v in state.items() if k.startswith(("missing", "unregistered")) and v}
                    if problems:
                        raise BuildError(f"{workflow.name}: the front-end reports {problems}")
                    write_json(out_dir / f"{workflow.name}.json", graph)
                    write_json(out_dir / "api" / f"{workflow.name}.json", api)
                    thumbnail(workflow, assets, out_dir / f"{workflow.name}.jpg")
                    logger.info("wrote %s (.json, .jpg, api/)", workflow.name)
        finally:
            server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m xdyna_tools.examples",
        description="Rebuild the example workflows (UI and API JSON, thumbnails) with the real ComfyUI front-end.",
    )
    parser.add_argument("--assets", type=Path, help="folder with reference_1.png, driving_1.mp4, pose_1.mp4")
    parser.add_argument("--out", type=Path, default=EXAMPLES_DIR, help="where to write (default example_workflows/)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        build(args.out, args.assets)
    except BuildError as err:
        say(f"xdyna examples: {err}", error=True)
        return 2
    return 0
