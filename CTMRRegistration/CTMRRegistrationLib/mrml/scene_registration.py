"""What `RegistrationLogic.register` takes and returns: the scene's side of a registration.

`RegistrationOptions` (the pipeline's) says how to register; `SceneOptions` says which nodes feed it and where
its results go. `register` accepts the fields of both as keywords and splits them here, once."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from ..core.errors import InputError
from ..qa.assess import QAOptions, QAResult
from ..registration.pipeline import RegistrationOptions, RegistrationResult


@dataclass
class SceneOptions:
    """The nodes a registration reads beside the two volumes, and what it leaves in the scene."""

    output_transform_node: object = None  # written into instead of a new node (a second run replaces it)
    apply_to_moving: bool = True  # put the result on top of the moving volume's transforms
    harden: bool = False
    output_volume_node: object = None  # receives the moving volume resampled on the fixed grid
    grid_transform: bool = False  # a deformable result as a grid transform instead of a B-spline
    add_mask_nodes: bool = False  # the foreground masks used, as labelmap nodes
    fixed_landmarks: object = None  # markups: their rigid fit replaces the automatic start pose
    moving_landmarks: object = None
    fixed_targets: object = None  # markups: target registration error before/after
    moving_targets: object = None
    fixed_segmentation: object = None  # segmentation or labelmap nodes: Dice and surface distances
    moving_segmentation: object = None
    crop_roi: object = None  # a markups ROI node (fixed-volume world frame): the region to register
    output_crop_roi: object = None  # an ROI node that receives the region registered (result.crop_roi_node)
    add_crop_roi: bool = False  # without output_crop_roi, leave the region in a new ROI node
    qa: bool | QAOptions = True
    report_directory: str | Path | None = None


def split_options(options: RegistrationOptions | None, scene: SceneOptions | None,
                  keywords: dict) -> tuple[RegistrationOptions, SceneOptions]:
    """The two option sets, `keywords` (fields of either) overriding the given ones; TypeError for a keyword
    that is neither's."""
    pipeline_names = {f.name for f in fields(RegistrationOptions)}
    scene_names = {f.name for f in fields(SceneOptions)}
    unknown = sorted(set(keywords) - pipeline_names - scene_names)
    if unknown:
        raise TypeError(f"register() got unknown keyword(s) {', '.join(unknown)}")
    options = replace(options or RegistrationOptions(),
                      **{k: v for k, v in keywords.items() if k in pipeline_names})
    if isinstance(options.stages, str):
        options = replace(options, stages=tuple(options.stages.split(",")))
    scene = replace(scene or SceneOptions(), **{k: v for k, v in keywords.items() if k in scene_names})
    if scene.report_directory is not None and not scene.qa:
        raise InputError("a report needs the quality assessment: leave qa on")
    return options, scene


@dataclass
class SceneRegistrationResult:
    """A registration stored in the scene: the pipeline's result, its assessment and the nodes it made.

    The pipeline's fields (transform, matrix, status, metrics, warnings, seconds, ...) read through."""

    registration: RegistrationResult
    qa: QAResult | None = None
    transform_node: object = None
    mask_nodes: dict = field(default_factory=dict)
    crop_roi_node: object = None

    def __getattr__(self, name: str):
        if name == "registration":
            raise AttributeError(name)
        return getattr(self.registration, name)

    @property
    def verdict(self) -> str | None:
        """'ok', 'check' or 'failed' from the quality assessment; None when it did not run."""
        return self.qa.verdict if self.qa is not None else None

    def as_dict(self) -> dict:
        """The JSON form printed by `ctmr-register --json`."""
        report = self.registration.as_dict()
        report = {"status": report.pop("status"), "verdict": self.verdict, **report}
        if self.qa is not None:
            report["qa"] = self.qa.as_dict()
        return report
