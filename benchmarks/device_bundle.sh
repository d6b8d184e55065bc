#!/usr/bin/env bash
# Packs what `gpu_check.py` needs on the workplace's lent GPU machine (an H200 image with PyTorch 2.11, Python
# 3.12 and no package registry) into two git-ignored folders that the device tool carries, so the one run a
# GPU session gets starts at once:
#   .whl/      wheels of the ComfyUI 0.33.0 requirements that image lacks (installed there with --no-index);
#   .gpusite/  the ComfyUI tarball from ../shared/host, comfy_kitchen without its compiled CUDA/HIP kernels
#              (226 MB unpacked, over the tool's 64 MiB; they serve fp8/fp4/int8 layers and int8 attention,
#              which an fp16/bf16 run does not use, and the package falls back when they are absent), and a
#              stand-in for comfyui-frontend-package (22 MB; ComfyUI's server only asks for its folder, and
#              no server is started by the check).
# Then, with the device tool, from the repository root:
#   run  command: bash benchmarks/device_run.sh    carry: [".whl", ".gpusite"]    timeout_s: 580
set -euo pipefail
cd "$(dirname "$0")/.."
shared=${XDYNA_SHARED:-../shared}
platforms=()
for tag in manylinux_2_{35,34,31,28,27,24,17}_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$tag")
done
# ComfyUI 0.33.0's requirements.txt, less what the image has (numpy, torch*, einops, transformers, tokenizers,
# sentencepiece, safetensors, aiohttp, yarl, pyyaml, Pillow, scipy, tqdm, psutil, filelock, requests) and what
# booting it for the check does not need (templates, docs, blake3, simpleeval, kornia, spandrel, PyOpenGL)
rm -rf .whl .gpusite
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${platforms[@]}" \
  -d .whl comfy-aimdo==0.4.13 torchsde==0.2.6 trampoline==0.1.2 av==18.1.0 SQLAlchemy==2.1.9 alembic==1.20.1 \
  Mako==1.4.3 pydantic==2.13.4 pydantic_core==2.46.4 annotated-types==0.8.0 typing-inspection==0.4.5 \
  typing_extensions==4.16.0
kitchen=$(mktemp -d)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${platforms[@]}" \
  -d "$kitchen" comfy-kitchen==0.2.31
mkdir -p .gpusite/comfyui_frontend_package/static
python3 - "$kitchen" <<'EOF'
import sys, zipfile
from pathlib import Path

wheel = next(Path(sys.argv[1]).glob("comfy_kitchen-*.whl"))
with zipfile.ZipFile(wheel) as archive:
    for name in archive.namelist():
        compiled = name.startswith("comfy_kitchen/backends/hip/") or name.endswith((".so", ".pyd"))
        if name.startswith("comfy_kitchen/") and not compiled:
            archive.extract(name, ".gpusite")
EOF
rm -rf "$kitchen"
echo "# stand-in: ComfyUI's server asks for the frontend's static folder when it is set up" \
  > .gpusite/comfyui_frontend_package/__init__.py
echo "<html></html>" > .gpusite/comfyui_frontend_package/static/index.html
cp "$shared/host/ComfyUI-0.33.0.tar.gz" .gpusite/
du -sh .whl .gpusite
