# Sourced by demo.sh and test.sh: offline model hubs, and the shared reference data read in place.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
if [ -z "${GREFINE_SHARED_DIR:-}" ] && [ -d ../shared ]; then
  GREFINE_SHARED_DIR="$(cd ../shared && pwd)"
  export GREFINE_SHARED_DIR
fi
