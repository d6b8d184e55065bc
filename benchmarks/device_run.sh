#!/usr/bin/env bash
# Runs on the lent GPU machine (see device_bundle.sh, which makes the two folders this needs): installs the
# carried wheels, boots the carried ComfyUI and runs gpu_check.py; its output and ComfyUI's log land in $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || exit 3
export PYTHONPATH=/tmp/site:$PWD/.gpusite PYTHONUNBUFFERED=1
out=${OUT:-$(mktemp -d)}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda)"
timeout "${XDYNA_GPU_CHECK_SECONDS:-555}" python3 benchmarks/gpu_check.py \
  --comfyui-tarball .gpusite/ComfyUI-0.33.0.tar.gz "$@" > "$out/gpu_check.log" 2> "$out/comfyui.log"
rc=$?
cat "$out/gpu_check.log"
grep -E "Error|error|Traceback" "$out/comfyui.log" | grep -v "No module named\|ModuleNotFoundError" | tail -20
exit $rc
