"""What the module ships (elastix parameter maps, icons, the bundled sample pair), its version, and where it runs."""

import sys
from pathlib import Path

VERSION = "0.1.0"


def resources_dir() -> Path:
    """The module's Resources folder, in a source tree, a Slicer build or an installed wheel."""
    here = Path(__file__).resolve().parent.parent  # the library package
    for candidate in (here.parent / "Resources", here / "Resources"):
        if (candidate / "Parameters").is_dir():
            return candidate
    raise FileNotFoundError(f"CTMRRegistration resources not found next to {here}")


def parameter_file(name: str) -> Path:
    """An elastix parameter file shipped under Resources/Parameters (name with or without .txt)."""
    path = resources_dir() / "Parameters" / (name if name.endswith(".txt") else f"{name}.txt")
    if not path.is_file():
        raise FileNotFoundError(f"no elastix parameter file {path.name} in {path.parent}")
    return path


def sample_data_dir() -> Path:
    """The bundled porcine CT/T2-MR pair (TCIA MRI-DIR, CC BY 4.0)."""
    return resources_dir() / "SampleData"


def sample_ct_path() -> Path:
    """The bundled porcine CT (2 mm voxels)."""
    return sample_data_dir() / "porcine_ct_2mm.nii.gz"


def sample_mr_path() -> Path:
    """The bundled porcine T2 MR (2 mm voxels)."""
    return sample_data_dir() / "porcine_mr_t2_2mm.nii.gz"


def sample_reference_transform_path() -> Path:
    """Reference rigid solution for the bundled pair (fixed CT -> moving MR, LPS): a Mattes-MI
    optimum, not ground truth; the phantom deformed between the scans."""
    return sample_data_dir() / "reference_rigid_fixedCT_movingMR.tfm"


def running_in_slicer() -> bool:
    """True inside the Slicer application (where slicer.app and slicer.modules exist)."""
    slicer = sys.modules.get("slicer")
    return slicer is not None and hasattr(slicer, "app") and hasattr(slicer, "modules")
