"""Volume files checked whole before loading, in every format the library reads; parameter maps checked
before elastix starts."""

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from CTMRRegistrationLib.core import resources
from CTMRRegistrationLib.core.errors import InputError
from CTMRRegistrationLib.core.image_files import check_volume_file, data_damage
from CTMRRegistrationLib.elastix.parameter_checks import check_parameter_map
from CTMRRegistrationLib.elastix.parameters import read_parameter_file

FORMATS = [(suffix, compressed) for suffix in (".nii.gz", ".nii", ".nrrd", ".mha") for compressed in (False, True)
           if not (suffix == ".nii" and compressed)]


@pytest.mark.parametrize("suffix, compressed", FORMATS)
def test_truncated_and_corrupt_files_are_refused(tmp_path, sample_ct, suffix, compressed):
    whole = tmp_path / f"whole{suffix}"
    sitk.WriteImage(sample_ct, str(whole), compressed)
    check_volume_file(whole)
    data = whole.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[: int(len(data) * 0.9)])
    with pytest.raises(InputError, match=f"cannot read volume cut{suffix}: damaged file"):
        check_volume_file(cut)
    assert data_damage(cut) is not None and data_damage(whole) is None
    if compressed or suffix == ".nii.gz":  # raw voxels carry no check sum: a flipped byte is only detectable here
        flipped = bytearray(data)
        flipped[len(data) // 2] ^= 0xFF
        (tmp_path / f"flip{suffix}").write_bytes(bytes(flipped))
        with pytest.raises(InputError, match="corrupt compressed data"):
            check_volume_file(tmp_path / f"flip{suffix}")


@pytest.mark.parametrize("suffix", [".nhdr", ".mhd"])
def test_detached_data_files_are_checked(tmp_path, sample_ct, suffix):
    header = tmp_path / f"ct{suffix}"
    sitk.WriteImage(sample_ct, str(header))
    check_volume_file(header)
    data = next(p for p in tmp_path.iterdir() if p != header)
    data.write_bytes(data.read_bytes()[:1000])
    with pytest.raises(InputError, match="truncated: 1000 bytes of voxel data"):
        check_volume_file(header)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_non_finite_voxels_are_refused_in_every_format(tmp_path, suffix):
    array = np.random.default_rng(0).normal(size=(20, 20, 20)).astype(np.float32)
    array[3, 4, 5] = np.nan
    path = tmp_path / f"nan{suffix}"
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path))
    with pytest.raises(InputError, match="contains NaN or infinite voxel values"):
        check_volume_file(path)


def test_parameter_maps_checked_for_the_backend():
    deformable = read_parameter_file(resources.parameter_file("Deformable"))
    assert check_parameter_map(deformable, "Deformable.txt") is deformable
    with pytest.raises(InputError, match="bending-energy penalty crashes the itk-elastix wheel"):
        check_parameter_map(deformable, "Deformable.txt", wheel=True)
    for key, values, expected in (
        ("Metric", ["AdvancedMattesMutualInformation"] * 2, "need (Registration"),
        ("FinalGridSpacingInPhysicalUnits", ["0"], "out of range (more than 0"),
        ("NumberOfResolutions", ["2.5"], "'2.5' is not a whole number"),
        ("HowToCombineTransforms", ["Multiply"], "use one of Add, Compose"),
        ("Optimizer", ["Adam"], "unknown Optimizer 'Adam'"),
    ):
        changed = deformable | {key: values, "Registration": ["MultiResolutionRegistration"]}
        with pytest.raises(InputError, match=expected.replace("(", r"\(")):
            check_parameter_map(changed, "p.txt")


def test_bundled_files_pass():
    for path in (resources.sample_ct_path(), resources.sample_mr_path()):
        check_volume_file(Path(path))
