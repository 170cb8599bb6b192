#!/usr/bin/env bash
# Fresh-machine test run: installs jaxsynth with its dev extra into ./.venv, Debian's chromium
# (driven by the reader-study browser test; never downloaded by Playwright) and shellcheck (the
# launch-script lint test), then runs the suite in two tiers: the fast tier (`-m "not slow"`,
# tiny shapes, a few minutes) and the slow tier (`-m slow`: long trainings, the wheel installed
# into a fresh venv, end-to-end runs). Tests marked `manual` (hours on this CPU) are left to a
# person with a bigger machine: `pytest -m manual`.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -q -e '.[dev]'
if ! command -v chromium >/dev/null 2>&1 || ! command -v shellcheck >/dev/null 2>&1; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium shellcheck >/dev/null
fi
.venv/bin/pytest -q -n 2 -m "not slow and not manual" tests
.venv/bin/pytest -q -n 2 -m "slow and not manual" tests
