"""What `RegistrationLogic.register` returns: the pipeline's result, its assessment and the nodes it made."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, fields

from ..qa.assess import QAResult
from ..registration.pipeline import RegistrationResult

DEPRECATED_KEYWORDS = {  # old register() keyword -> its name now
    "report_directory": "report_folder",
    "output_transform_node": "output_transform",
    "output_volume_node": "output_volume",
    "output_crop_roi": "registered_region",
    "add_crop_roi": "add_registered_region",
}


def renamed_keywords(deprecated: dict) -> dict:
    """`deprecated` keywords under their current names, with a DeprecationWarning; TypeError for unknown ones."""
    unknown = sorted(set(deprecated) - set(DEPRECATED_KEYWORDS))
    if unknown:
        raise TypeError(f"register() got unexpected keyword(s) {', '.join(unknown)}")
    for old in deprecated:
        warnings.warn(f"register(): '{old}' is deprecated, use '{DEPRECATED_KEYWORDS[old]}'", DeprecationWarning,
                      stacklevel=3)
    return {DEPRECATED_KEYWORDS[old]: value for old, value in deprecated.items()}


@dataclass
class SceneRegistrationResult(RegistrationResult):
    """A registration stored in the scene.

    Beside the pipeline's fields (transform, matrix, status, metrics, warnings, seconds, stage_seconds, ...):
    `qa` the quality assessment (None when it did not run), `transform_node` the node holding the result,
    `mask_nodes` the foreground masks as labelmap nodes ({"fixed": ..., "moving": ...} with add_mask_nodes),
    `registered_region_node` the ROI node of the region registered (with registered_region or
    add_registered_region)."""

    qa: QAResult | None = None
    transform_node: object = None
    mask_nodes: dict = field(default_factory=dict)
    registered_region_node: object = None

    @classmethod
    def from_registration(cls, registration: RegistrationResult, **scene_fields) -> SceneRegistrationResult:
        """The pipeline's `registration` with the scene's fields."""
        return cls(**{f.name: getattr(registration, f.name) for f in fields(RegistrationResult)}, **scene_fields)

    @property
    def verdict(self) -> str | None:
        """'ok', 'check' or 'failed' from the quality assessment; None when it did not run."""
        return self.qa.verdict if self.qa is not None else None

    @property
    def error_bound_mm(self) -> float | None:
        """The quality check's upper bound on the result's p95 error (mm); None without it or its restarts."""
        return self.qa.metrics.get("error_bound_mm") if self.qa is not None else None

    @property
    def crop_roi_node(self):
        """Deprecated name of `registered_region_node`."""
        warnings.warn("crop_roi_node is deprecated, use registered_region_node", DeprecationWarning, stacklevel=2)
        return self.registered_region_node

    def as_dict(self) -> dict:
        """The JSON form printed by `ctmr-register --json`."""
        report = super().as_dict()
        report = {"status": report.pop("status"), "verdict": self.verdict, "error_bound_mm": self.error_bound_mm,
                  **report}
        if self.qa is not None:
            report["qa"] = self.qa.as_dict()
        return report
