"""Command-line tools of X-Dyna for ComfyUI, usable without ComfyUI in the same process.

- `python -m xdyna_tools.batch`: runs (reference image, driving video) pairs through ComfyUI servers' HTTP API.
- `python -m xdyna_tools.weights`: checks and downloads the model files the pack needs.

Nothing here imports torch or ComfyUI at module level, so the tools start fast on a machine that only talks
to remote servers.
"""
