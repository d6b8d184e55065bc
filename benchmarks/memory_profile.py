r"""Memory of one X-Dyna window call, counted tensor by tensor: what a GPU run would allocate, measured anywhere.

Samples one step of a one-window clip (16 frames, both ControlNets, rendered hints) and counts the bytes of
every tensor the run's operations create while it lives (`LiveTensorBytes`: each new storage is counted when an
operation returns it and uncounted when it is freed; views and in-place results add nothing). Its peak is the
figure `torch.cuda.max_memory_allocated` reports above the weights on a GPU, less what kernels allocate inside
an operation (attention and convolution workspaces) and the allocator's rounding, so on a machine without a GPU
it estimates a window's GPU memory: the weights (counted from the loaded models) plus this peak. It also prints
what ComfyUI's memory manager planned for the call (`memory_required`, SD1.5's `memory_usage_factor`).

`--branches batched` makes ComfyUI run both CFG branches in one UNet call (as it does when it finds the memory
free, as on a large GPU); `split` makes it run them one after the other (as it does short of memory).

    python benchmarks/memory_profile.py                                           # tiny model, 64x64
    python benchmarks/memory_profile.py --layout sd15 --precision bf16 --width 512 --height 896 \
        --attention pytorch --branches batched                                    # real size: 10-12 min, 2 cores

bf16 and fp16 tensors have the same sizes, so a bf16 run on the CPU counts what fp16 allocates on a GPU.
"""

from __future__ import annotations

import argparse
import sys
import weakref
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

sys.path.insert(0, str(Path(__file__).resolve().parent))


class LiveTensorBytes(TorchDispatchMode):
    """While active: the bytes of the storages that operations created and that are still alive, and their peak.

    Tensors that existed before (weights, inputs) are not counted, nor memory an operation frees before it
    returns. A storage is uncounted when it dies, however long a view or the C++ side keeps it. With
    `sites=True` each storage also records the line of Python that made it, and `at_peak` holds the live bytes
    per line and the line running when the peak was reached (slower: a stack walk per new storage).
    """

    def __init__(self, sites: bool = False) -> None:
        super().__init__()
        self.live: dict[int, int] = {}  # storage (its C++ address) → bytes
        self.current = 0
        self.peak = 0
        self.sites = sites
        self.site_of: dict[int, str] = {}
        self.at_peak: tuple[str, dict[str, int]] = ("", {})

    def _freed(self, key: int) -> None:
        self.current -= self.live.pop(key)
        self.site_of.pop(key, None)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        # a view, an in-place or an out= result shares an input's storage: nothing new
        inputs = {_storage_key(t) for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)}
        for value in tree_flatten(out)[0]:
            if isinstance(value, torch.Tensor) and value.device.type != "meta":
                storage = value.untyped_storage()
                key, nbytes = storage._cdata, storage.nbytes()
                if nbytes and key not in self.live and key not in inputs:
                    self.live[key] = nbytes
                    self.current += nbytes
                    weakref.finalize(storage, self._freed, key)
                    site = self._site() if self.sites else ""
                    self.site_of[key] = site
                    if self.current > self.peak:
                        self.peak = self.current
                        if self.sites:
                            self.at_peak = (site, self._by_site())
        return out

    def _by_site(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for key, nbytes in self.live.items():
            site = self.site_of.get(key, "")
            totals[site] = totals.get(site, 0) + nbytes
        return totals

    @staticmethod
    def _site() -> str:
        """The innermost line of the pack's or ComfyUI's code on the stack (torch's own frames skipped)."""
        frame = sys._getframe(2)
        while frame is not None:
            name = frame.f_code.co_filename
            if "/torch/" not in name and name != __file__:
                return f"{Path(name).parent.name}/{Path(name).name}:{frame.f_lineno} {frame.f_code.co_name}"
            frame = frame.f_back
        return "?"


def _storage_key(tensor: torch.Tensor) -> int:
    """The address of the storage a tensor views (the same for every view of it)."""
    return tensor.untyped_storage()._cdata


def weight_bytes(*modules) -> int:
    """Bytes of the distinct parameters and buffers of these modules (a tensor shared by two counts once)."""
    seen: dict[int, int] = {}
    for module in modules:
        for tensor in [*module.parameters(), *module.buffers()]:
            seen[_storage_key(tensor)] = tensor.untyped_storage().nbytes()
    return sum(seen.values())


def main() -> None:
    import harness

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layout", choices=list(harness.LAYOUTS), default="tiny", help="tiny or real SD1.5 sizes")
    parser.add_argument("--precision", choices=list(harness.PRECISION_COMPUTE), default="bf16")
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--frames", type=int, default=16, help="frames of the clip: one window")
    parser.add_argument("--branches", choices=("batched", "split"), default="batched")
    parser.add_argument("--sites", type=int, default=0, help="print the N lines holding most memory at the peak")
    parser.add_argument(
        "--attention", choices=("default", "pytorch"), default="default", help="pytorch: --use-pytorch-cross-attention"
    )
    args = parser.parse_args()

    host = harness.boot(args.attention)
    import comfy.model_patcher
    import comfy.patcher_extension

    window = min(args.frames, 16)
    setup = harness.build(host, harness.LAYOUTS[args.layout], args.height, args.width, args.precision)
    pose, face = harness.rendered_hints(host, args.frames, args.height, args.width)
    positive, negative = harness.conditioning(setup, pose, face)
    components = setup.tiny.weights.components
    weights = weight_bytes(
        setup.model.model, components, setup.pose.control_model, setup.face.control_model
    )  # UNet, X-Dyna's parts (motion modules, Dynamics-Adapter, image projection), pose and S-Face ControlNets

    free = (1 << 50) if args.branches == "batched" else 0  # what ComfyUI is told is free when it plans the call
    batches = []  # frames of each UNet call, the reference frame of each branch included

    def unet(executor, x, *rest, **kwargs):
        batches.append(x.shape[0])
        return executor(x, *rest, **kwargs)

    model = setup.model.clone()
    model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "xdyna_memory_profile", unet)
    real_free = comfy.model_patcher.ModelPatcher.get_free_memory
    comfy.model_patcher.ModelPatcher.get_free_memory = lambda self, device: free
    counter = LiveTensorBytes(sites=args.sites > 0)
    try:
        with counter:
            harness.sample(setup, positive, negative, args.frames, 1, window=window, model=model)
    finally:
        comfy.model_patcher.ModelPatcher.get_free_memory = real_free

    base = setup.model.model
    h, w = setup.reference.latent.shape[-2:]
    batch = max(batches)
    shape = [batch // (window + 1) * window, 4, h, w]  # core plans the call without the reference frames
    planned = gpu_plan(base, shape)
    device = "cpu" if not torch.cuda.is_available() else torch.cuda.get_device_name()
    print(
        f"X-Dyna {args.layout} {args.precision} at {args.width}x{args.height}, {args.frames} frames, "
        f"branches {args.branches}, {harness.attention_name()}, on {device}"
    )
    print(f"UNet call batch (frames, reference included): {batch}")
    print(f"weights: {weights / 2**20:.1f} MiB")
    print(f"peak of the tensors the run created: {counter.peak / 2**20:.1f} MiB")
    print(f"weights + that peak: {(weights + counter.peak) / 2**20:.1f} MiB")
    print(
        f"ComfyUI's plan for the call on a CUDA GPU: {planned / 2**20:.1f} MiB "
        f"(memory_usage_factor {base.memory_usage_factor}); "
        f"measured / planned: {counter.peak / planned:.2f}"
    )
    print(f"still alive after the run: {counter.current / 2**20:.1f} MiB")
    if args.sites:
        running, by_site = counter.at_peak
        print(f"at the peak, running {running}; the lines that made what was alive:")
        for site, nbytes in sorted(by_site.items(), key=lambda item: -item[1])[: args.sites]:
            print(f"{nbytes / 2**20:>10.1f} MiB  {site}")


def gpu_plan(base_model, shape: list[int]) -> int:
    """`memory_required` as ComfyUI computes it on a CUDA GPU with PyTorch's or xformers' attention (on the CPU it
    uses another formula, for its sub-quadratic attention)."""
    import comfy.model_management as mm

    saved = mm.pytorch_attention_flash_attention
    mm.pytorch_attention_flash_attention = lambda: True
    try:
        return int(base_model.memory_required(shape))
    finally:
        mm.pytorch_attention_flash_attention = saved


if __name__ == "__main__":
    main()
