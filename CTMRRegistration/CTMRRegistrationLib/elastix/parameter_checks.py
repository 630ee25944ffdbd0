"""Elastix parameter maps checked before elastix starts: known components, numbers of the right type and
range, booleans spelled as elastix reads them. A bad preset is an InputError naming the file, the key and
the value, instead of an elastix dump after the images were prepared, or a run that never ends (elastix
reads a negative iteration count as a huge unsigned one)."""

from __future__ import annotations

import re

from ..core.errors import InputError
from .parameters import ParameterMap

COMPONENTS = {
    "Registration": {"MultiResolutionRegistration", "MultiMetricMultiResolutionRegistration",
                     "MultiResolutionRegistrationWithFeatures"},
    "FixedImagePyramid": {"FixedSmoothingImagePyramid", "FixedRecursiveImagePyramid", "FixedShrinkingImagePyramid",
                          "FixedGenericImagePyramid"},
    "MovingImagePyramid": {"MovingSmoothingImagePyramid", "MovingRecursiveImagePyramid",
                           "MovingShrinkingImagePyramid", "MovingGenericImagePyramid"},
    "Interpolator": {"LinearInterpolator", "BSplineInterpolator", "BSplineInterpolatorFloat",
                     "NearestNeighborInterpolator", "ReducedDimensionBSplineInterpolator", "RayCastInterpolator"},
    "ResampleInterpolator": {"FinalBSplineInterpolator", "FinalBSplineInterpolatorFloat", "FinalLinearInterpolator",
                             "FinalNearestNeighborInterpolator", "FinalReducedDimensionBSplineInterpolator",
                             "FinalRayCastInterpolator"},
    "Resampler": {"DefaultResampler"},
    "Transform": {"EulerTransform", "SimilarityTransform", "TranslationTransform", "AffineTransform",
                  "AffineDTITransform", "AffineLogTransform", "BSplineTransform", "RecursiveBSplineTransform",
                  "SplineKernelTransform"},
    "Metric": {"AdvancedMattesMutualInformation", "NormalizedMutualInformation", "AdvancedNormalizedCorrelation",
               "AdvancedMeanSquares", "AdvancedKappaStatistic", "KNNGraphAlphaMutualInformation",
               "GradientDifference", "NormalizedGradientCorrelation", "PatternIntensity",
               "ViolaWellsMutualInformation", "TransformBendingEnergyPenalty", "TransformRigidityPenalty",
               "DisplacementMagnitudePenalty", "DistancePreservingRigidityPenalty"},
    "Optimizer": {"AdaptiveStochasticGradientDescent", "AdaptiveStochasticLBFGS",
                  "AdaptiveStochasticVarianceReducedGradient", "StandardGradientDescent",
                  "RegularStepGradientDescent", "QuasiNewtonLBFGS", "ConjugateGradient", "ConjugateGradientFRPR",
                  "FiniteDifferenceGradientDescent", "PreconditionedGradientDescent",
                  "PreconditionedStochasticGradientDescent", "CMAEvolutionStrategy", "FullSearch", "Powell",
                  "Simplex", "SimultaneousPerturbation", "RSGDEachParameterApart"},
    "ImageSampler": {"RandomCoordinate", "Random", "RandomSparseMask", "Full", "Grid", "MultiInputRandomCoordinate"},
}
SINGLE_VALUED = ("Registration", "Transform", "Optimizer", "Resampler")
# key: (smallest, largest) for integers
INTEGERS = {
    "NumberOfResolutions": (1, 10), "MaximumNumberOfIterations": (1, 100_000),
    "NumberOfSpatialSamples": (1, 10_000_000), "NumberOfHistogramBins": (4, 1024),
    "NumberOfFixedHistogramBins": (4, 1024), "NumberOfMovingHistogramBins": (4, 1024),
    "MaximumNumberOfSamplingAttempts": (0, 100), "FinalBSplineInterpolationOrder": (0, 5),
    "BSplineInterpolationOrder": (0, 5), "BSplineTransformSplineOrder": (1, 3),
    "FixedImageDimension": (3, 3), "MovingImageDimension": (3, 3), "RandomSeed": (0, 2**32 - 1),
}
# key: (smallest, largest, smallest excluded)
NUMBERS = {
    "FinalGridSpacingInPhysicalUnits": (0.0, 1000.0, True), "FinalGridSpacingInVoxels": (0.0, 1000.0, True),
    "GridSpacingSchedule": (0.0, 1000.0, True), "ImagePyramidSchedule": (0.0, 1000.0, False),
    "FixedImagePyramidSchedule": (0.0, 1000.0, False), "MovingImagePyramidSchedule": (0.0, 1000.0, False),
    "MaximumStepLength": (0.0, 1e6, True), "SP_a": (0.0, 1e12, True), "SP_A": (0.0, 1e12, False),
    "SP_alpha": (0.0, 10.0, True), "RequiredRatioOfValidSamples": (0.0, 1.0, True),
    "SampleRegionSize": (0.0, 1e4, True), "DefaultPixelValue": (-1e30, 1e30, False),
}
WEIGHT = re.compile(r"^Metric\d+Weight$")
BOOLEANS = {
    "AutomaticScalesEstimation", "AutomaticTransformInitialization", "AutomaticParameterEstimation",
    "NewSamplesEveryIteration", "CheckNumberOfSamples", "ErodeMask", "UseDirectionCosines", "WriteResultImage",
    "UseFastAndLowMemoryVersion", "ShowExactMetricValue", "UseRandomSampleRegion", "UseMultiThreadingForMetrics",
    "WriteTransformParametersEachIteration", "WriteTransformParametersEachResolution", "CompressResultImage",
    "UseJacobianPreconditioning", "UseAdaptiveStepSizes",
}
CHOICES = {"HowToCombineTransforms": {"Compose", "Add"}}
WHEEL_UNSUPPORTED = {"TransformBendingEnergyPenalty": "a bending-energy penalty crashes the itk-elastix wheel; run "
                     "this stage with an elastix executable (apt install elastix, or --elastix PATH)"}


def _number(values: list[str], key: str, where: str, integer: bool) -> list[float]:
    numbers = []
    for value in values:
        try:
            number = int(value) if integer else float(value)
        except ValueError:
            kind = "a whole number" if integer else "a number"
            raise InputError(f"{where}: ({key} {' '.join(values)}): '{value}' is not {kind}") from None
        numbers.append(number)
    return numbers


def _check_range(key: str, values: list[str], where: str, low: float, high: float, open_low: bool,
                 integer: bool) -> None:
    for number in _number(values, key, where, integer):
        if number < low or number > high or (open_low and number == low):
            bound = f"more than {low:g}" if open_low else f"at least {low:g}"
            raise InputError(f"{where}: ({key} {' '.join(values)}): {number:g} is out of range ({bound}, at most "
                             f"{high:g})")


def check_parameter_map(parameters: ParameterMap, name: str, wheel: bool = False) -> ParameterMap:
    """`parameters` unchanged when elastix can run them; InputError naming `name`, the key and the value
    otherwise. `wheel`: the itk-elastix backend runs the map (some components crash it)."""
    for key, values in parameters.items():
        if not values:
            raise InputError(f"{name}: ({key}) has no value")
        if key in COMPONENTS:
            unknown = [v for v in values if v not in COMPONENTS[key]]
            if unknown:
                raise InputError(f"{name}: unknown {key} '{unknown[0]}' (known: {', '.join(sorted(COMPONENTS[key]))})")
            if key in SINGLE_VALUED and len(values) > 1:
                raise InputError(f"{name}: ({key} ...) takes one value, not {len(values)}")
        elif key in INTEGERS:
            _check_range(key, values, name, *INTEGERS[key], False, integer=True)
        elif key in NUMBERS or WEIGHT.match(key):
            _check_range(key, values, name, *NUMBERS.get(key, (0.0, 1e6, False)), integer=False)
        elif key in BOOLEANS and any(v not in ("true", "false") for v in values):
            raise InputError(f"{name}: ({key} {' '.join(values)}): write \"true\" or \"false\"")
        elif key in CHOICES and any(v not in CHOICES[key] for v in values):
            raise InputError(f"{name}: ({key} {' '.join(values)}): use one of {', '.join(sorted(CHOICES[key]))}")
    metrics = parameters.get("Metric", [])
    if len(metrics) > 1 and parameters.get("Registration", [""])[0] != "MultiMetricMultiResolutionRegistration":
        raise InputError(f"{name}: {len(metrics)} metrics need "
                         '(Registration "MultiMetricMultiResolutionRegistration")')
    if wheel:
        for metric in metrics:
            if metric in WHEEL_UNSUPPORTED:
                raise InputError(f"{name}: {WHEEL_UNSUPPORTED[metric]}")
    return parameters
