"""The elastix backends: executable discovery, clear errors, progress and cancel."""

import shutil
import threading
import time

import numpy as np
import pytest
import SimpleITK as sitk

from CTMRRegistrationLib.core.errors import Cancelled, InputError
from CTMRRegistrationLib.core.geometry import matrix_from_sitk
from CTMRRegistrationLib.core.resources import parameter_file
from CTMRRegistrationLib.elastix.backends import choose_backend, find_elastix_executable
from CTMRRegistrationLib.elastix.executable import ElastixProgress
from CTMRRegistrationLib.elastix.parameters import ElastixJob, read_parameter_file
from CTMRRegistrationLib.elastix.transforms import sitk_from_transform_map

needs_executable = pytest.mark.skipif(shutil.which("elastix") is None, reason="no elastix executable on PATH")


def blob(shift_mm=(0.0, 0.0, 0.0)) -> sitk.Image:
    """A smooth off-centre ellipsoid with a bright inclusion, 2 mm voxels; shifted by `shift_mm`."""
    z, y, x = np.mgrid[:48, :48, :48] * 2.0 - 47.0
    x, y, z = x - shift_mm[0], y - shift_mm[1], z - shift_mm[2]
    array = 100.0 * np.exp(-((x / 30) ** 2 + (y / 22) ** 2 + (z / 18) ** 2) * 3)
    array += 80.0 * np.exp(-(((x - 12) / 6) ** 2 + ((y + 8) / 5) ** 2 + ((z - 5) / 7) ** 2))
    image = sitk.GetImageFromArray(array.astype(np.float32))
    image.SetSpacing((2.0, 2.0, 2.0))
    image.SetOrigin((-47.0, -47.0, -47.0))
    return image


def shift_job() -> ElastixJob:
    """The blob registered to itself shifted by (6, -4, 3) mm with the rigid preset."""
    return ElastixJob(blob(), blob((6.0, -4.0, 3.0)), [read_parameter_file(parameter_file("Rigid"))], threads=2)


def test_missing_executable_path_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="no elastix executable"):
        find_elastix_executable(tmp_path / "nowhere" / "elastix")


@needs_executable
def test_executable_recovers_a_shift_and_reports_progress():
    fractions = []
    maps = choose_backend().run(shift_job(), progress=fractions.append)
    translation = matrix_from_sitk(sitk_from_transform_map(maps[0]))[:3, 3]
    np.testing.assert_allclose(translation, [6.0, -4.0, 3.0], atol=0.5)
    assert fractions == sorted(fractions) and len(fractions) >= 2


@needs_executable
def test_cancel_stops_elastix():
    with pytest.raises(Cancelled):
        choose_backend().run(shift_job(), cancelled=lambda: True)


@pytest.mark.slow
def test_itk_elastix_wheel_recovers_the_same_shift():
    from CTMRRegistrationLib.elastix.wheel import run_itk_elastix

    translation = matrix_from_sitk(sitk_from_transform_map(run_itk_elastix(shift_job())[0]))[:3, 3]
    np.testing.assert_allclose(translation, [6.0, -4.0, 3.0], atol=0.5)


@needs_executable
def test_cancel_kills_a_running_elastix_within_two_seconds():
    job = ElastixJob(blob(), blob((6.0, -4.0, 3.0)), [read_parameter_file(parameter_file("Deformable"))], threads=1)
    requested = []
    timer = threading.Timer(1.0, lambda: requested.append(time.monotonic()))
    timer.start()
    with pytest.raises(Cancelled):
        choose_backend("elastix").run(job, cancelled=lambda: bool(requested))
    assert time.monotonic() - requested[0] < 2.0


def test_progress_follows_maps_resolutions_and_iterations():
    rigid = read_parameter_file(parameter_file("Rigid"))  # 2 resolutions, 200 and 300 iterations
    tracker = ElastixProgress([rigid, rigid])
    lines = ["Running elastix with parameter file 0: \"a\".", "Resolution: 0", "99\t-0.5", "Resolution: 1",
             "299\t-0.6", "Running elastix with parameter file 1: \"b\".", "Resolution: 1", "149\t-0.7", "noise"]
    fractions = [tracker.update(line) for line in lines]
    assert fractions == [None, None, 0.125, 0.25, 0.5, None, 0.75, 0.875, None]


def test_itk_elastix_wheel_refuses_the_bending_energy_penalty_it_crashes_on():
    from CTMRRegistrationLib.core.errors import RegistrationError
    from CTMRRegistrationLib.elastix.wheel import run_itk_elastix

    job = ElastixJob(blob(), blob((3.0, 0.0, 0.0)), [read_parameter_file(parameter_file("Deformable"))])
    with pytest.raises(RegistrationError, match="bending-energy"):
        run_itk_elastix(job)
