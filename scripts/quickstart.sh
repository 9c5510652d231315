#!/usr/bin/env bash
# Set up, then run the main job: Real-ESRGAN x4plus (real weights) and bicubic on the built-in
# demo set, on CPU or GPU, and print the leaderboard.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/srbench -m method=realesrgan,bicubic dataset=demo "$@"
.venv/bin/srbench leaderboard results/runs
