#!/usr/bin/env bash
# Run the module's self-test (CTMRRegistrationTest) inside a real 3D Slicer against this checkout.
#   CTMRRegistration/Testing/run_in_slicer.sh [/path/to/Slicer]
# Needs Slicer 5.8 or newer with the SlicerElastix extension installed (or the itk-elastix wheel in Slicer's
# Python). Not run by this repository's CI: CI has no Slicer application.
set -euo pipefail
SLICER="${1:-${SLICER:-Slicer}}"
MODULE_DIR="$(cd "$(dirname "$0")/.." && pwd)"
exec "$SLICER" --no-splash --no-main-window --disable-cli-modules \
  --additional-module-paths "$MODULE_DIR" \
  --python-code "import slicer.testing; slicer.testing.runUnitTest(['$MODULE_DIR'], 'CTMRRegistration')"
