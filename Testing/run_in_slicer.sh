#!/usr/bin/env bash
# Run the module's self-test (CTMRRegistrationTest) inside a real 3D Slicer against this checkout, unattended,
# and exit with its result: 0 when every test passes, 1 otherwise.
#
#   Testing/run_in_slicer.sh /path/to/Slicer
#
# Needs Slicer 5.10 or newer with the SlicerElastix extension installed (the Extensions Manager's copy is found
# through the user's settings, so this does not pass --testing, which would ignore them). The test needs no
# main window and opens no message box. On a machine without a display, run it under xvfb-run.
set -euo pipefail
SLICER="${1:-${SLICER:-Slicer}}"
HERE="$(cd "$(dirname "$0")" && pwd)"
export CTMR_MODULE_DIR="$(cd "$HERE/../CTMRRegistration" && pwd)"
exec "$SLICER" --no-splash --no-main-window --additional-module-paths "$CTMR_MODULE_DIR" \
  --python-script "$HERE/run_self_test.py"
