"""Run elastix in process through the itk-elastix wheel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..core.errors import NoOverlapError, RegistrationError
from ..core.private_folders import private_folder
from .executable import NO_OVERLAP_SIGNS, log_tail
from .parameters import ElastixJob, ParameterMap, write_parameter_file


def _itk_image(image: sitk.Image, pixel_type):
    import itk

    array = sitk.GetArrayFromImage(image).astype(pixel_type, copy=False)
    itk_image = itk.GetImageFromArray(np.ascontiguousarray(array))
    itk_image.SetOrigin(image.GetOrigin())
    itk_image.SetSpacing(image.GetSpacing())
    itk_image.SetDirection(itk.GetMatrixFromArray(np.asarray(image.GetDirection()).reshape(3, 3)))
    return itk_image


def _log_tail(directory: Path) -> str:
    logs = sorted(directory.glob("*.log"))
    return log_tail(logs[-1].read_text(errors="replace")) if logs else ""


def _check_supported(job: ElastixJob) -> None:
    """The itk-elastix wheel crashes the whole process (segmentation fault) on a bending-energy penalty
    (found with itk-elastix 0.2x); refuse it with a clear error instead."""
    for parameters in job.parameter_maps:
        if "TransformBendingEnergyPenalty" in parameters.get("Metric", []):
            raise RegistrationError(
                "the itk-elastix wheel cannot run a bending-energy penalty (it crashes); run the deformable stage "
                "with an elastix executable (apt install elastix, or --elastix PATH)"
            )


def run_itk_elastix(job: ElastixJob) -> list[ParameterMap]:
    """Run `job`; returns elastix's TransformParameters maps, one per parameter map given."""
    _check_supported(job)
    import itk

    with private_folder("elastix") as workdir:
        parameter_object = itk.ParameterObject.New()
        for parameters in job.parameter_maps:
            parameter_object.AddParameterMap(parameters)
        method = itk.ElastixRegistrationMethod[itk.Image[itk.F, 3], itk.Image[itk.F, 3]].New()
        method.SetFixedImage(_itk_image(job.fixed, np.float32))
        method.SetMovingImage(_itk_image(job.moving, np.float32))
        method.SetParameterObject(parameter_object)
        if job.initial_transform_map is not None:
            initial_path = write_parameter_file(job.initial_transform_map, workdir / "InitialTransform.txt")
            method.SetInitialTransformParameterFileName(str(initial_path))
        if job.fixed_mask is not None:
            method.SetFixedMask(_itk_image(job.fixed_mask, np.uint8))
        if job.moving_mask is not None:
            method.SetMovingMask(_itk_image(job.moving_mask, np.uint8))
        if job.threads:
            method.SetNumberOfThreads(int(job.threads))
        method.SetOutputDirectory(str(workdir))
        method.SetLogToConsole(False)
        method.SetLogToFile(True)
        try:
            method.UpdateLargestPossibleRegion()
        except RuntimeError as error:
            tail = _log_tail(workdir) or str(error)
            if any(sign in tail or sign in str(error) for sign in NO_OVERLAP_SIGNS):
                raise NoOverlapError("the images do not overlap after initialisation") from error
            raise RegistrationError(f"elastix failed:\n{tail}") from error
        result = method.GetTransformParameterObject()
        return [
            {key: list(values) for key, values in result.GetParameterMap(index).items()}
            for index in range(result.GetNumberOfParameterMaps())
        ]
