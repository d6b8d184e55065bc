"""A real ComfyUI, in process: find a checkout, boot it on CPU, load this pack as a custom node, run prompts.

Nothing here imitates ComfyUI. The pack is loaded by ComfyUI's own `nodes.load_custom_node`, prompts are
validated by `execution.validate_prompt` and run by `execution.PromptExecutor`, and a node's outputs are
read back from the executor's own output cache. The only stand-in is the object that would forward
status messages to browsers (`MessageLog`): it records them so tests can read progress and errors.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xdyna_tools.comfy_launch import PACK_ROOT, find_comfyui, is_comfyui_checkout  # noqa: F401  (re-exported)


@dataclass
class MessageLog:
    """Receives what the executor would send to browser clients (progress, executed, errors)."""

    client_id: str | None = None
    last_node_id: str | None = None
    last_prompt_id: str | None = None
    messages: list[tuple[str, Any]] = field(default_factory=list)
    progress: list[tuple[int, int]] = field(default_factory=list)

    def send_sync(self, event: str, data: Any, sid: str | None = None) -> None:
        self.messages.append((event, data))

    def queue_updated(self) -> None:
        pass


def widget_defaults(required: dict[str, Any]) -> dict[str, Any]:
    """The widget values the front-end fills in for a node's `required` inputs (INPUT_TYPES or /object_info)."""
    values = {}
    for name, spec in required.items():
        options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
        if "default" in options:
            values[name] = options["default"]
        elif isinstance(spec[0], list) and spec[0]:
            values[name] = spec[0][0]
        elif spec[0] == "COMBO" and options.get("options"):
            values[name] = options["options"][0]
    return values


class PromptError(RuntimeError):
    """A prompt failed validation or execution; `details` holds ComfyUI's own error record."""

    def __init__(self, message: str, details: Any):
        super().__init__(message)
        self.details = details


@dataclass
class PromptRun:
    prompt_id: str
    executor: Any
    log: MessageLog

    def outputs(self, node_id: str) -> list[Any]:
        """The values a node returned (one entry per output socket), from the executor's cache."""
        entry = asyncio.run(self.executor.caches.outputs.get(str(node_id)))
        if entry is None:
            raise KeyError(f"node {node_id} has no cached outputs (was it executed?)")
        return [values[0] if len(values) == 1 else values for values in entry.outputs]

    @property
    def ui(self) -> dict[str, Any]:
        return self.executor.history_result.get("outputs", {})

    def events(self, name: str) -> list[Any]:
        return [data for event, data in self.log.messages if event == name]


class ComfyHost:
    """One booted ComfyUI per test session (its module state is global, like a running server's)."""

    def __init__(self, path: Path, workdir: Path, cli: dict[str, Any] | None = None):
        self.path = path
        self.workdir = workdir
        self._boot(cli or {})

    def _boot(self, cli: dict[str, Any]) -> None:
        if str(self.path) not in sys.path:
            sys.path.insert(0, str(self.path))
        import comfy.options

        comfy.options.enable_args_parsing(False)
        import torch
        from comfy.cli_args import args

        args.cpu = not torch.cuda.is_available()
        for name, value in cli.items():  # command-line options, as main.py would have parsed them
            if not hasattr(args, name):
                raise ValueError(f"ComfyUI has no command-line option {name!r}")
            setattr(args, name, value)
        import folder_paths

        for name in ("input", "output", "temp", "user", "models"):
            (self.workdir / name).mkdir(parents=True, exist_ok=True)
        folder_paths.set_input_directory(str(self.workdir / "input"))
        folder_paths.set_output_directory(str(self.workdir / "output"))
        folder_paths.set_temp_directory(str(self.workdir / "temp"))
        folder_paths.set_user_directory(str(self.workdir / "user"))

        import comfy.utils
        import execution
        import nodes
        import server

        # A real PromptServer object, as main.py makes one (core and third-party nodes reach it through
        # `PromptServer.instance`); it is not started, since prompts are run directly by the executor.
        self.server = server.PromptServer(asyncio.new_event_loop())
        self._progress: list[tuple[int, int]] = []
        comfy.utils.set_progress_bar_global_hook(self._on_progress)

        asyncio.run(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
        self.core_node_ids = set(nodes.NODE_CLASS_MAPPINGS)
        if not asyncio.run(nodes.load_custom_node(str(PACK_ROOT))):
            raise RuntimeError(f"ComfyUI could not load the pack at {PACK_ROOT}; see the log above")
        self.pack_node_ids = set(nodes.NODE_CLASS_MAPPINGS) - self.core_node_ids
        # ComfyUI names the package after its path; tests import the pack's modules under that name.
        self.pack_module = str(PACK_ROOT).replace(".", "_x_")
        self.nodes = nodes
        self.execution = execution
        self.folder_paths = folder_paths

    def _on_progress(self, value: int, total: int, preview=None, node_id=None) -> None:
        self._progress.append((value, total))

    @property
    def input_dir(self) -> Path:
        return Path(self.folder_paths.get_input_directory())

    @property
    def output_dir(self) -> Path:
        return Path(self.folder_paths.get_output_directory())

    def run(self, prompt: dict[str, dict[str, Any]], targets: list[str] | None = None) -> PromptRun:
        """Validate and execute an API-format prompt; raise `PromptError` with ComfyUI's record on failure.

        `targets` runs just those nodes (and what they depend on) when a graph has no output node, as ComfyUI
        does for a partial execution, validating each target with ComfyUI's own `validate_inputs`.
        """
        prompt_id = str(uuid.uuid4())
        if targets is None:
            valid, error, outputs, node_errors = asyncio.run(self.execution.validate_prompt(prompt_id, prompt, None))
            if not valid:
                details = {"error": error, "node_errors": node_errors}
                raise PromptError(f"prompt invalid: {error} {node_errors}", details)
        else:
            outputs, validated = list(targets), {}
            for target in targets:
                valid, reasons, _ = asyncio.run(self.execution.validate_inputs(prompt_id, prompt, target, validated))
                if not valid:
                    raise PromptError(f"prompt invalid at node {target}: {reasons}", reasons)
        log = MessageLog(progress=self._progress)
        self._progress.clear()
        executor = self.execution.PromptExecutor(
            log, cache_type=self.execution.CacheType.CLASSIC, cache_args={"lru": 0, "ram": 0, "ram_inactive": 0}
        )
        executor.execute(prompt, prompt_id, {}, outputs)
        if not executor.success:
            errors = [data for event, data in executor.status_messages if event == "execution_error"]
            detail = errors[0] if errors else executor.status_messages
            message = detail.get("exception_message", detail) if isinstance(detail, dict) else detail
            raise PromptError(f"prompt failed: {message}", detail)
        return PromptRun(prompt_id, executor, log)
