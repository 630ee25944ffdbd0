"""Runs CTMRRegistration's self-test inside Slicer and exits Slicer with its result (0 pass, 1 fail).

Started by run_in_slicer.sh (`Slicer --python-script`), which sets CTMR_MODULE_DIR to the module's folder."""

import os
import sys
import traceback
import unittest

import slicer.util

status = 1
try:
    sys.path.insert(0, os.environ["CTMR_MODULE_DIR"])
    suite = unittest.defaultTestLoader.loadTestsFromName("CTMRRegistration")
    result = unittest.TextTestRunner(verbosity=2).run(suite)
    status = 0 if result.wasSuccessful() and result.testsRun > 0 else 1
except Exception:
    traceback.print_exc()
finally:
    slicer.util.exit(status)
