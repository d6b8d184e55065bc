"""The ComfyUI integration of X-Dyna: the one place that touches ComfyUI's internals (docs/comfyui_integration.md).

| module | what it holds |
|---|---|
| `folders` | the model folders X-Dyna registers and reads |
| `loaders` | the X-Dyna UNet as a MODEL and the ControlNets as core ControlNets, built from the official files |
| `model_patch` | the X-Dyna patch on a ModelPatcher: reference frame, Dynamics-Adapter, IP-Adapter, joint GroupNorm, motion modules |
| `context_windows` | videos of any length in windows, the memory plan of one window |
| `controlnets` | ControlNets evaluated once per frame and step, hints read a window at a time |
| `sigmas` | the released DDIM timesteps as a model's sigmas |
| `runtime` | ComfyUI's device, progress bar and interrupts for work outside the UNet |
"""
