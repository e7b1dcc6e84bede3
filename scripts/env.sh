# Sourced by setup.sh, demo.sh and test.sh: the virtual environment to use, offline model hubs, and
# the shared reference data read in place.
VENV="${GREFINE_VENV:-.venv}"  # .ci/run points this at a fresh, temporary environment
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
if [ -z "${GREFINE_SHARED_DIR:-}" ] && [ -d ../shared ]; then
  GREFINE_SHARED_DIR="$(cd ../shared && pwd)"
  export GREFINE_SHARED_DIR
fi
