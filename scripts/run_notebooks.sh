#!/usr/bin/env bash
# Execute every notebook in notebooks/ in place with the venv's kernel. TensorFlow's C++ start-up
# lines go to the kernel's own stderr, not into the stored outputs.
set -euo pipefail
cd "$(dirname "$0")/.."
for notebook in notebooks/*.ipynb; do
  .venv/bin/jupyter nbconvert --to notebook --execute --inplace \
    --ExecutePreprocessor.extra_arguments='["--IPKernelApp.capture_fd_output=False"]' \
    "$notebook"
done
