#!/usr/bin/env bash
# The wheels the GPU machine lacks, for its Python, into the git-ignored .whl/ (carried there as `.whl`):
#
#   bash benchmarks/device_wheels.sh                 # Python 3.12 (the GPU machine's), into .whl/
#   PYTHON_VERSION=3.11 WHEELHOUSE=/tmp/whl-311 bash benchmarks/device_wheels.sh   # the same set for a CPU rehearsal
#
# The GPU machine has torch 2.11, transformers 5.17, accelerate, numpy, pandas, pyarrow, safetensors, tokenizers,
# jaxtyping, einops, rich, xxhash, fsspec, pyyaml, tqdm (benchmarks/README.md) and no network. What
# `import transformer_lens` and the workbench's code paths in benchmarks/device_check.py need beyond that, found by
# importing and running them with only the machine's packages and these wheels (transformers 5.17): transformer-lens,
# datasets (imported by transformer_lens at import), which imports dill and multiprocess. The three after them are
# small pure-Python packages transformer-lens declares and imports lazily; carried so that no code path of it stops
# on them. --no-deps everywhere: the machine's torch and transformers must stay. --only-binary: nothing is built.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON_VERSION:-3.12}
OUT=${WHEELHOUSE:-.whl}
PIP=${PIP:-python3 -m pip}
WHEELS=(
    transformer-lens==4.3.0  # the hooked bridge (the project's pin)
    datasets==5.2.0  # imported by transformer_lens at import
    dill==0.4.1  # datasets: at import (its version is read from metadata)
    multiprocess==0.70.19  # datasets: at import; wheels per Python version (py312-none-any)
    fancy-einsum==0.0.3
    typeguard==4.6.1
    beartype==0.23.1
)
rm -rf "$OUT"
mkdir -p "$OUT"
# pip matches manylinux tags exactly: name every one a wheel of these may carry
$PIP download --quiet --no-deps --only-binary=:all: --python-version "$PY" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 --platform any -d "$OUT" "${WHEELS[@]}"
ls -1 "$OUT"
du -sh "$OUT" | sed 's/\t.*/ in all (the device carry limit is 64 MiB, the working tree included)/'
