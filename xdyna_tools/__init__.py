"""Command-line tools of X-Dyna for ComfyUI, usable without ComfyUI in the same process.

- `python -m xdyna_tools.batch`: runs (reference image, driving video) pairs through ComfyUI servers' HTTP API.
- `python -m xdyna_tools.weights`: checks and downloads the model files the pack needs.
- `python -m xdyna_tools.examples`: rebuilds the example workflows with a ComfyUI server and the real front-end
  (`comfy_launch` starts the server, `frontend` drives headless Chromium; the host tests use both).

Nothing here imports torch or ComfyUI at module level, so the tools start fast on a machine that only talks
to remote servers.
"""
