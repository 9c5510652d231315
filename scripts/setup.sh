#!/usr/bin/env bash
# Create .venv and install srbench with everything it needs (idempotent; pip only).
# torch/torchvision are pinned to the releases this project's machines carry on local disk.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
PIP=".venv/bin/python -m pip"
# 1) torch first, so basicsr-fixed's sdist builds against it without an isolated env (~1 s instead of ~55 s)
$PIP install -q "torch==2.14.1" "torchvision==0.29.1" "setuptools>=77,<81" wheel numpy
# 2) the project, its pinned dependencies, launchers and test tools
$PIP install -q --no-build-isolation -e ".[dev,launchers]"
.venv/bin/python -c "import srbench, basicsr, pyiqa, diffusers; print('srbench', srbench.__version__, 'ready')"
