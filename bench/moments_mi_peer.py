"""Peer for capture_benchmark.py: moments initialisation + Mattes MI rigid (BRAINSFit's useMomentsAlign).

Usage: moments_mi_peer.py FIXED MOVING OUTPUT.tfm THREADS
"""

import sys

import SimpleITK as sitk


def main(fixed_path: str, moving_path: str, output_path: str, threads: int) -> None:
    fixed = sitk.ReadImage(fixed_path, sitk.sitkFloat32)
    moving = sitk.ReadImage(moving_path, sitk.sitkFloat32)
    initial = sitk.CenteredTransformInitializer(
        fixed, moving, sitk.VersorRigid3DTransform(), sitk.CenteredTransformInitializerFilter.MOMENTS
    )
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(50)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(0.002, 121212)  # BRAINSFit default
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(2.0, 0.01, 300, relaxationFactor=0.6)
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel([4, 2, 1])
    method.SetSmoothingSigmasPerLevel([2.0, 1.0, 0.0])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    method.SetInitialTransform(initial, inPlace=True)
    method.SetNumberOfThreads(threads)
    method.Execute(fixed, moving)
    sitk.WriteTransform(initial, output_path)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
