#!/usr/bin/env bash
# bash bench/gpu/build_wheelhouse.sh [PYTHON_VERSION...]     (default: 3.11 3.12)
# Downloads, on a machine that reaches PyPI, the wheels of bench/gpu/requirements.txt for Linux
# x86_64 and each CPython version given into bench/gpu/wheelhouse/, so that bench/gpu_check.sh
# installs them offline on a lent GPU machine (whose image lacks them and reaches no registry).
# Binary wheels only, no dependency resolution (the list is complete and pinned); the one package
# PyPI has only as a source archive (antlr4-python3-runtime, pure Python) is built into a
# py3-none-any wheel here. Fails when the wheelhouse exceeds MAX_MB (default 55): a device run
# carries at most 64 MiB.
set -euo pipefail
cd "$(dirname "$0")"
VERSIONS=("$@")
if [ ${#VERSIONS[@]} -eq 0 ]; then VERSIONS=(3.11 3.12); fi
MAX_MB="${MAX_MB:-55}"
PYTHON="${PYTHON:-python3}"
rm -rf wheelhouse
mkdir -p wheelhouse
SOURCE_ONLY="antlr4-python3-runtime"
grep -v "^#" requirements.txt | grep -v "^$SOURCE_ONLY==" > wheelhouse/.binary.txt
for version in "${VERSIONS[@]}"; do
  "$PYTHON" -m pip download --quiet --no-deps --only-binary :all: -d wheelhouse \
    --implementation cp --python-version "$version" \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform linux_x86_64 \
    -r wheelhouse/.binary.txt
done
"$PYTHON" -m pip wheel --quiet --no-deps -w wheelhouse "$(grep "^$SOURCE_ONLY==" requirements.txt)"
rm wheelhouse/.binary.txt
MB=$(du -sm wheelhouse | cut -f1)
echo "wheelhouse: $(ls wheelhouse | wc -l) wheels, ${MB} MB for CPython ${VERSIONS[*]}"
if [ "$MB" -gt "$MAX_MB" ]; then
  echo "build_wheelhouse: ${MB} MB exceeds MAX_MB=${MAX_MB}; build for fewer Python versions" >&2
  exit 1
fi
