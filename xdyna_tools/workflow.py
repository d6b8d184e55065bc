"""API-format workflows as batch templates: which nodes a job rewrites, found by class type, never by node id.

Per job, a copy of the workflow gets:

- the uploaded reference image in the reference loader (`LoadImage.image`): the LoadImage that feeds
  `XDyna_LoadReference.image` (through any nodes in between), else the one titled "reference", else the only one;
- the uploaded driving video in the driving loader (`LoadVideo.file`, or VideoHelperSuite's
  `VHS_LoadVideo.video`): the one titled "driving", else the only one;
- the job's seed in every literal `seed` / `noise_seed` of the samplers in `SEED_INPUTS`;
- with `--frames N`: the literal frame counts in `FRAME_INPUTS` (the X-Dyna sampler and init latent, VHS frame
  caps) and in `DRIVING_FRAME_SELECTORS` on the driving video's path (`VideoTemporalCrop.length`,
  `VideoFrameSample.num_frames`, `ImageFromBatch.length`): all of them become N;
- `filename_prefix` of every saver, as `xdyna_batch/<job>/<original name>`, so each job's files are its own;
- overrides `KEY=VALUE` where KEY is `NODE_ID.input`, `ClassType.input` (every node of that class) or
  `Title.input` (the node's title in the UI).

`--reference-node` / `--driving-node` name the loaders explicitly when the rules above are ambiguous.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

logger = logging.getLogger("xdyna.batch")

REFERENCE_LOADERS = {"LoadImage": "image"}
DRIVING_LOADERS = {"LoadVideo": "file", "VHS_LoadVideo": "video", "VHS_LoadVideoFFmpeg": "video"}
REFERENCE_CONSUMERS = {"XDyna_LoadReference": "image"}
SEED_INPUTS = {
    "XDyna_TemporalSampler": ("seed",),
    "XDyna_InitLatent": ("seed",),
    "KSampler": ("seed",),
    "KSamplerAdvanced": ("noise_seed",),
    "SamplerCustom": ("noise_seed",),
    "RandomNoise": ("noise_seed",),
}
FRAME_INPUTS = {
    "XDyna_TemporalSampler": "frames",
    "XDyna_InitLatent": "frames",
    "VHS_LoadVideo": "frame_load_cap",
    "VHS_LoadVideoFFmpeg": "frame_load_cap",
}
# Frame selections rewritten only on the driving video's path (the same nodes elsewhere select other things).
DRIVING_FRAME_SELECTORS = {"VideoTemporalCrop": "length", "VideoFrameSample": "num_frames", "ImageFromBatch": "length"}
PREFIX_INPUT = "filename_prefix"
OUTPUT_PREFIX_ROOT = "xdyna_batch"


class WorkflowError(ValueError):
    """The workflow cannot serve as a batch template; the message says what is missing and how to fix it."""


def is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)


def node_title(node: dict) -> str:
    return str(node.get("_meta", {}).get("title", ""))


def ancestors(prompt: dict[str, dict], node_id: str) -> set[str]:
    """Every node that `node_id` depends on through its linked inputs."""
    seen: set[str] = set()
    stack = [node_id]
    while stack:
        for value in prompt.get(stack.pop(), {}).get("inputs", {}).values():
            if is_link(value) and value[0] not in seen:
                seen.add(value[0])
                stack.append(value[0])
    return seen


def _by_class(prompt: dict[str, dict], classes: Iterable[str]) -> list[str]:
    classes = set(classes)
    return [nid for nid, node in prompt.items() if node.get("class_type") in classes]


def _pick(prompt, candidates: list[str], word: str, role: str, option: str) -> str:
    if len(candidates) == 1:
        return candidates[0]
    titled = [nid for nid in candidates if word in node_title(prompt[nid]).lower()]
    if len(titled) == 1:
        return titled[0]
    listing = ", ".join(f"{nid} ({prompt[nid]['class_type']} {node_title(prompt[nid])!r})" for nid in candidates)
    if not candidates:
        raise WorkflowError(f"the workflow has no {role} loader; add one or name it with {option}")
    raise WorkflowError(f"the workflow has several {role} loaders: {listing}; name one with {option} ID")


def check_api_format(data: Any, source: str) -> dict[str, dict]:
    if isinstance(data, dict) and "nodes" in data and "links" in data:
        raise WorkflowError(
            f"{source} is a UI-format workflow; the batch tool needs the API format "
            f"(in ComfyUI: Workflow → Export (API))"
        )
    if not isinstance(data, dict) or not data:
        raise WorkflowError(f"{source} is not an API-format workflow (a JSON object of node id → node)")
    for nid, node in data.items():
        if not isinstance(node, dict) or "class_type" not in node or not isinstance(node.get("inputs"), dict):
            raise WorkflowError(f"{source}: node {nid!r} has no class_type and inputs; is this an API-format file?")
    return data


@dataclass
class WorkflowTemplate:
    """An API-format workflow and the nodes a job rewrites."""

    prompt: dict[str, dict]
    source: str
    digest: str
    reference_node: str
    driving_node: str

    @classmethod
    def load(cls, path: str | Path, reference_node: str | None = None, driving_node: str | None = None):
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
            data = json.loads(text)
        except (OSError, ValueError) as err:
            raise WorkflowError(f"cannot read the workflow {path}: {err}") from err
        return cls.from_prompt(check_api_format(data, str(path)), str(path), reference_node, driving_node)

    @classmethod
    def from_prompt(cls, prompt: dict, source: str = "<workflow>", reference_node=None, driving_node=None):
        prompt = check_api_format(copy.deepcopy(prompt), source)
        digest = hashlib.sha256(json.dumps(prompt, sort_keys=True).encode()).hexdigest()
        reference = reference_node or cls._find_reference(prompt)
        driving = driving_node or _pick(
            prompt, _by_class(prompt, DRIVING_LOADERS), "driving", "driving-video", "--driving-node"
        )
        for nid, loaders, option in (
            (reference, REFERENCE_LOADERS, "--reference-node"),
            (driving, DRIVING_LOADERS, "--driving-node"),
        ):
            if nid not in prompt:
                raise WorkflowError(f"{option} {nid}: no node with that id in {source}")
            if prompt[nid]["class_type"] not in loaders:
                raise WorkflowError(
                    f"{option} {nid} is a {prompt[nid]['class_type']}; expected one of {', '.join(loaders)}"
                )
        return cls(prompt, source, digest, reference, driving)

    @staticmethod
    def _find_reference(prompt: dict[str, dict]) -> str:
        loaders = _by_class(prompt, REFERENCE_LOADERS)
        feeding = set()
        for nid in _by_class(prompt, REFERENCE_CONSUMERS):
            link = prompt[nid]["inputs"].get(REFERENCE_CONSUMERS[prompt[nid]["class_type"]])
            if is_link(link):
                upstream = {link[0]} | ancestors(prompt, link[0])
                feeding |= {n for n in loaders if n in upstream}
        return _pick(prompt, sorted(feeding) or loaders, "reference", "reference-image", "--reference-node")

    def class_types(self) -> set[str]:
        return {node["class_type"] for node in self.prompt.values()}

    def render(
        self,
        reference: str,
        driving: str,
        seed: int,
        job_name: str,
        frames: int | None = None,
        overrides: dict[str, Any] | None = None,
    ) -> dict[str, dict]:
        """The prompt for one job (a deep copy; the template is unchanged)."""
        prompt = copy.deepcopy(self.prompt)
        ref = prompt[self.reference_node]
        ref["inputs"][REFERENCE_LOADERS[ref["class_type"]]] = reference
        drv = prompt[self.driving_node]
        drv["inputs"][DRIVING_LOADERS[drv["class_type"]]] = driving
        driven = {nid for nid in prompt if self.driving_node in ancestors(prompt, nid)}
        for nid, node in prompt.items():
            inputs, class_type = node["inputs"], node["class_type"]
            for name in SEED_INPUTS.get(class_type, ()):
                if name in inputs and not is_link(inputs[name]):
                    inputs[name] = seed
            if frames is not None:
                name = FRAME_INPUTS.get(class_type)
                if nid in driven and class_type in DRIVING_FRAME_SELECTORS:
                    name = DRIVING_FRAME_SELECTORS[class_type]
                if name and name in inputs and not is_link(inputs[name]):
                    inputs[name] = frames
            prefix = inputs.get(PREFIX_INPUT)
            if isinstance(prefix, str):
                inputs[PREFIX_INPUT] = f"{OUTPUT_PREFIX_ROOT}/{job_name}/{PurePosixPath(prefix).name or 'output'}"
        apply_overrides(prompt, overrides or {})
        return prompt


def apply_overrides(prompt: dict[str, dict], overrides: dict[str, Any]) -> None:
    """Set literal inputs: keys `NODE_ID.input`, `ClassType.input` or `Title.input` (see the module docstring)."""
    for key, value in overrides.items():
        target, dot, name = str(key).rpartition(".")
        if not dot or not target or not name:
            raise WorkflowError(f"override {key!r}: write it as NODE.input, e.g. XDyna_TemporalSampler.steps=25")
        if target in prompt:
            nodes = [target]
        else:
            nodes = [nid for nid, n in prompt.items() if n["class_type"] == target] or [
                nid for nid, n in prompt.items() if node_title(n) == target
            ]
        if not nodes:
            raise WorkflowError(f"override {key!r}: no node with id, class type or title {target!r} in the workflow")
        for nid in nodes:
            inputs = prompt[nid]["inputs"]
            if name not in inputs:
                known = ", ".join(sorted(k for k, v in inputs.items() if not is_link(v)))
                raise WorkflowError(
                    f"override {key!r}: node {nid} ({prompt[nid]['class_type']}) has no input {name!r}; it has {known}"
                )
            if is_link(inputs[name]):
                raise WorkflowError(f"override {key!r}: input {name!r} of node {nid} is a connection, not a value")
            inputs[name] = value


def parse_override(text: str) -> tuple[str, Any]:
    """`KEY=VALUE` from the command line; VALUE is read as JSON when it parses (numbers, true/false), else text."""
    key, eq, value = text.partition("=")
    if not eq or not key.strip():
        raise WorkflowError(f"--set {text!r}: write it as NODE.input=VALUE")
    try:
        return key.strip(), json.loads(value)
    except ValueError:
        return key.strip(), value
