#!/usr/bin/env bash
# One-time set-up on a fresh machine: Debian rendering libraries, .venv, torch (CPU build
# on disk) first, then the project with its pinned simulators, then the LIBERO config so
# nothing prompts on stdin. Idempotent: re-running it only fills in what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

need_pkgs=()
for p in libegl1 libegl-mesa0 libgl1-mesa-dri libosmesa6; do
  dpkg -s "$p" >/dev/null 2>&1 || need_pkgs+=("$p")
done
if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "[setup] installing Debian rendering packages: ${need_pkgs[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_pkgs[@]}"
fi

if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv"
  $PY -m venv .venv
fi
VPY=.venv/bin/python
$VPY -m pip install -q --upgrade pip
if ! $VPY -c "import torch, sys; sys.exit(0 if torch.__version__.startswith('2.13.0') else 1)" 2>/dev/null; then
  echo "[setup] installing torch==2.13.0 (CPU build)"
  $VPY -m pip install -q "torch==2.13.0"
fi
echo "[setup] installing world2act and its pinned dependencies"
$VPY -m pip install -q -e .
# mujoco 4.x breaks robosuite and Meta-World: fail loudly if anything upgraded it.
$VPY -c "import mujoco; assert mujoco.__version__ == '3.3.0', mujoco.__version__"

# LeRobot's own reader and checker for the round-trip tests (tests/data/test_lerobot_tools.py):
# a separate interpreter, since lerobot-dataset pins av<16 (about 1 min, 1.8 GB with its torch).
# Best effort: without it those tests skip, and nothing else needs it.
LPY=.venv-lerobot/bin/python
if ! { [ -x $LPY ] && $LPY -c "import ledataset, lerobot_doctor" 2>/dev/null; }; then
  echo "[setup] creating .venv-lerobot (lerobot-dataset + lerobot-doctor, for the LeRobot round-trip tests)"
  { $PY -m venv .venv-lerobot && $LPY -m pip install -q "torch==2.13.0" lerobot-dataset lerobot-doctor; } \
    || echo "[setup] warning: lerobot-dataset could not be installed; the LeRobot round-trip tests will skip"
fi

# LIBERO asks on stdin for its paths unless a config exists.
$VPY -m world2act.envs.libero_config
echo "[setup] done"
