"""The API format of an example workflow, computed from its description and the live node schemas.

`api_prompt` gives what the front-end's `app.graphToPrompt` sends for the UI graph: every widget input gets the
description's value or the schema's default, as the front-end would fill it in. `comparable` and
`prompt_differences` compare two API prompts input by input (the build and tests/host/test_workflows.py).
"""

from __future__ import annotations

from typing import Any

from .graphs import UI_ONLY_NODES, Workflow

# Widget input types: everything else is a socket. Dynamic combos carry nested widget inputs per option.
DYNAMIC_COMBO = "COMFY_DYNAMICCOMBO_V3"
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO", DYNAMIC_COMBO}
SCALAR_DEFAULTS = {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}


def _default(kind: Any, options: dict) -> Any:
    if "default" in options:
        return options["default"]
    if isinstance(kind, list):
        return kind[0] if kind else None
    if kind == "COMBO":
        return options.get("options", [None])[0] if options.get("options") else None
    if kind == DYNAMIC_COMBO:
        return options["options"][0]["key"]
    return SCALAR_DEFAULTS.get(kind)


def widget_values(node_info: dict, given: dict[str, Any]) -> dict[str, Any]:
    """Every widget input of a node with its value: `given`, else the schema default. Dynamic combos add the
    inputs of the chosen option as `<combo>.<input>` (the names the front-end sends)."""
    values: dict[str, Any] = {}

    def visit(inputs: dict, prefix: str) -> None:
        for section in ("required", "optional"):
            for name, spec in inputs.get(section, {}).items():
                kind, options = spec[0], (spec[1] if len(spec) > 1 else {})
                if not (isinstance(kind, list) or kind in WIDGET_TYPES):
                    continue
                full = prefix + name
                values[full] = given.get(full, _default(kind, options))
                if kind == DYNAMIC_COMBO:
                    chosen = [o for o in options["options"] if o["key"] == values[full]]
                    if not chosen:
                        raise ValueError(f"{full}={values[full]!r} is not one of its options")
                    visit(chosen[0]["inputs"], full + ".")

    visit(node_info["input"], "")
    unknown = set(given) - set(values)
    if unknown:
        raise ValueError(f"{node_info['name']} has no widget input(s) {sorted(unknown)}; it has {sorted(values)}")
    return values


def api_prompt(workflow: Workflow, object_info: dict) -> dict[str, dict]:
    """The API-format prompt of a workflow: what `app.graphToPrompt` sends for its UI graph."""
    ids = workflow.ids()
    by_key = {node.key: node for node in workflow.nodes}
    prompt: dict[str, dict] = {}
    for node in workflow.nodes:
        if node.type in UI_ONLY_NODES:
            continue
        info = object_info[node.type]
        inputs: dict[str, Any] = widget_values(info, node.widgets)
        for name, (source, output) in node.links.items():
            source_info = object_info[by_key[source].type]
            if output not in source_info["output_name"]:
                raise ValueError(f"{source} ({source_info['name']}) has no output {output!r}")
            inputs[name] = [str(ids[source]), source_info["output_name"].index(output)]
        title = node.title or info["display_name"]
        prompt[str(ids[node.key])] = {"inputs": inputs, "class_type": node.type, "_meta": {"title": title}}
    return prompt


def comparable(prompt: dict, object_info: dict) -> dict:
    """Node ids, class types and the inputs the node schemas declare (titles are cosmetic).

    The front-end also sends the values of its own display widgets (Load Video's `video-preview`); the
    server ignores inputs that a node does not declare, and so does this comparison.
    """
    out = {}
    for nid, node in prompt.items():
        info = object_info.get(node["class_type"], {}).get("input", {})
        declared = {name for section in ("required", "optional") for name in info.get(section, {})}
        inputs = {k: v for k, v in node["inputs"].items() if k.split(".")[0] in declared}
        out[nid] = {"class_type": node["class_type"], "inputs": inputs}
    return out


def prompt_differences(frontend: dict, python: dict) -> list[str]:
    """Where two API prompts disagree, node by node and input by input (empty when they agree)."""
    out = [f"node {nid} only in the front-end's" for nid in frontend.keys() - python.keys()]
    out += [f"node {nid} only in the Python one" for nid in python.keys() - frontend.keys()]
    for nid in sorted(frontend.keys() & python.keys(), key=int):
        a, b = frontend[nid], python[nid]
        if a["class_type"] != b["class_type"]:
            out.append(f"node {nid}: {a['class_type']} against {b['class_type']}")
            continue
        for name in sorted(a["inputs"].keys() | b["inputs"].keys()):
            if a["inputs"].get(name, "<absent>") != b["inputs"].get(name, "<absent>"):
                out.append(
                    f"{nid} {a['class_type']}.{name}: front-end {a['inputs'].get(name, '<absent>')!r}, "
                    f"python {b['inputs'].get(name, '<absent>')!r}"
                )
    return out
