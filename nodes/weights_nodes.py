"""X-Dyna Check Weights: which model files the pack needs are present in ComfyUI's model folders, and fetching them.

The list of files, their sources, sizes and licences lives in `xdyna_core.weights_manifest`, the check and the
download in `xdyna_core.weights_check` (shared with `python -m xdyna_tools.weights`); this node resolves folders
through ComfyUI's own `folder_paths`, so `extra_model_paths.yaml` is honoured. The report is returned as the
node's STRING output and as its UI text, which web/js/xdyna.js shows on the node.
"""

from __future__ import annotations

from comfy_api.latest import io, ui

from ..xdyna_comfy import folders, runtime
from ..xdyna_core.weights_check import ComfyFolders, check, download, format_report

CATEGORY = "X-Dyna"


def comfy_model_folders() -> ComfyFolders:
    """ComfyUI's model folders with the pack's own (models/xdyna, ipadapter, xdyna/dwpose) registered."""
    folders.register_model_folders()
    return ComfyFolders(folders.folder_paths)


class XDynaCheckWeights(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="XDyna_CheckWeights",
            display_name="X-Dyna Check Weights",
            category=CATEGORY,
            description=(
                "Lists every model file X-Dyna needs (X-Dyna UNet and ControlNets, IP-Adapter-plus, CLIP ViT-H, "
                "DWPose, an SD1.5 checkpoint) with where it is, or where it goes and where it comes from. "
                "Optionally downloads the missing ones from Hugging Face into ComfyUI's model folders."
            ),
            inputs=[
                io.Boolean.Input(
                    "download_missing",
                    default=False,
                    tooltip="Download missing or incomplete files from their Hugging Face repositories (up to "
                    "about 15.5 GB in all) into the first model folder of their kind; without network it stops "
                    "within about 10 s, naming each file, its address and its folder. Off: only check.",
                ),
            ],
            outputs=[io.String.Output(display_name="report")],
            is_output_node=True,
        )

    @classmethod
    def fingerprint_inputs(cls, download_missing: bool) -> str:
        # The files on disk are the input: run again whenever they changed, not only when the switch did.
        return format_report(check(comfy_model_folders())) + f"\ndownload={download_missing}"

    @classmethod
    def execute(cls, download_missing: bool) -> io.NodeOutput:
        folders = comfy_model_folders()
        if download_missing:
            statuses = download(folders, on_file=runtime.frame_progress(1))
        else:
            statuses = check(folders)
        report = format_report(statuses)
        return io.NodeOutput(report, ui=ui.PreviewText(report))


NODES = [XDynaCheckWeights]
