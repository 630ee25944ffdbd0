"""CTMRRegistration library: CT-MR registration on MRML nodes and SimpleITK images, no Qt needed.

Layers, each importing only those before it: `core` (pure), `elastix`, `registration`, `landmarks`, `dicom`,
`qa`, `mrml` (slicer-core scene and nodes), `apps` (command lines), `batch` (the cohort runner `ctmr-batch`, the
only one that needs Dask: the `batch` extra). The names below load on first use, so that importing a pure
module does not load vtk or MRML.
"""

from __future__ import annotations

import importlib

from .core.resources import VERSION as __version__

_EXPORTS = {
    "Cancelled": ".core.errors",
    "CTMRError": ".core.errors",
    "InputError": ".core.errors",
    "NoOverlapError": ".core.errors",
    "RegistrationError": ".core.errors",
    "RegistrationOptions": ".registration.pipeline",
    "RegistrationResult": ".registration.pipeline",
    "register_images": ".registration.pipeline",
    "RegistrationLogic": ".mrml.logic",
    "SceneRegistrationResult": ".mrml.scene_registration",
    "register_landmarks": ".mrml.landmark_registration",
    "LandmarkRegistrationResult": ".mrml.landmark_registration",
    "flatten_transform_chain": ".mrml.transform_nodes",
    "QAOptions": ".qa.assess",
    "QAResult": ".qa.assess",
    "assess": ".qa.assess",
    "MRMLContext": ".mrml.scene",
    "create_headless_context": ".mrml.scene",
    "default_context": ".mrml.scene",
    "resources": ".core.resources",
    "mrml_io": ".mrml.node_io",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(_EXPORTS[name], __name__)
    value = module if name in ("resources", "mrml_io") else getattr(module, name)
    globals()[name] = value
    return value
