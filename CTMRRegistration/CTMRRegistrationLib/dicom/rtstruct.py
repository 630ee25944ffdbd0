"""RTSTRUCT (DICOM RT Structure Set) contours rasterised into a labelmap on an image grid (pydicom + numpy).

Each ROI's closed planar contours are filled on the slices of the reference grid (a voxel is inside when its
centre is inside the polygon; contours of one plane combine by even-odd, so inner contours are holes). A slice
takes the nearest contour plane within half the contour planes' spacing, so contours drawn every 3 mm fill a
1 mm grid and vice versa. Contours must be parallel to the grid's slices: rasterise on the series the RTSTRUCT
was drawn on (or one with the same slice orientation). Each ROI gets its own label value, in file order; where
ROIs overlap, the later one wins.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk

from ..core.errors import InputError
from ..core.imaging import index_to_physical_matrix

RTSTRUCT = "1.2.840.10008.5.1.4.1.1.481.3"
PLANE_TOLERANCE = 0.1  # slices: how far a contour's points may leave its plane


@dataclass
class Roi:
    """One ROI: its name and its closed planar contours (each an N x 3 array of LPS points, mm)."""

    number: int
    name: str
    contours: list[np.ndarray] = field(default_factory=list)


@dataclass
class StructureSet:
    """The ROIs of an RTSTRUCT with the frame of reference they are drawn in."""

    frame_of_reference_uid: str
    rois: list[Roi]


def is_rtstruct(path) -> bool:
    """True for a readable DICOM file of the RT Structure Set SOP class."""
    try:
        header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"])
    except (OSError, pydicom.errors.InvalidDicomError, ValueError):
        return False
    return str(header.get("SOPClassUID", "")) == RTSTRUCT


def read_structure_set(path) -> StructureSet:
    """The ROIs (with at least one closed planar contour) of an RTSTRUCT file."""
    path = Path(path)
    if not is_rtstruct(path):
        raise InputError(f"{path.name} is not a DICOM RT Structure Set")
    dataset = pydicom.dcmread(path)
    names = {int(roi.ROINumber): str(roi.ROIName) for roi in dataset.get("StructureSetROISequence", [])}
    frames = {str(roi.get("ReferencedFrameOfReferenceUID", "")) for roi in dataset.get("StructureSetROISequence", [])}
    rois = []
    for item in dataset.get("ROIContourSequence", []):
        number = int(item.ReferencedROINumber)
        contours = [np.asarray([float(v) for v in contour.ContourData]).reshape(-1, 3)
                    for contour in item.get("ContourSequence", [])
                    if contour.get("ContourGeometricType", "CLOSED_PLANAR") == "CLOSED_PLANAR"
                    and int(contour.get("NumberOfContourPoints", 0)) >= 3]
        if contours:
            rois.append(Roi(number, names.get(number, f"ROI {number}"), contours))
    if not rois:
        raise InputError(f"{path.name} holds no closed planar contour")
    return StructureSet(next(iter(frames - {""}), ""), rois)


def _inside(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Even-odd test of 2-D `points` (M x 2) against a closed `polygon` (N x 2)."""
    inside = np.zeros(len(points), dtype=bool)
    x, y = points[:, 0], points[:, 1]
    for (x1, y1), (x2, y2) in zip(polygon, np.roll(polygon, -1, axis=0)):
        if y1 == y2:
            continue
        crosses = (y1 > y) != (y2 > y)
        x_cross = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
        inside ^= crosses & (x < x_cross)
    return inside


def _fill_plane(shape_xy: tuple[int, int], polygons: list[np.ndarray]) -> np.ndarray:
    """A (y, x) boolean slice: voxel centres inside an odd number of the index-space `polygons`."""
    filled = np.zeros(shape_xy[::-1], dtype=bool)
    for polygon in polygons:
        low = np.maximum(np.floor(polygon.min(axis=0)).astype(int), 0)
        high = np.minimum(np.ceil(polygon.max(axis=0)).astype(int), np.asarray(shape_xy) - 1)
        if np.any(high < low):
            continue
        xs, ys = np.meshgrid(np.arange(low[0], high[0] + 1), np.arange(low[1], high[1] + 1))
        inside = _inside(np.column_stack([xs.ravel(), ys.ravel()]).astype(float), polygon)
        filled[ys.ravel()[inside], xs.ravel()[inside]] ^= True
    return filled


def _roi_mask(roi: Roi, reference: sitk.Image, to_index: np.ndarray) -> np.ndarray:
    """A (z, y, x) boolean array of the ROI on the reference grid."""
    size = reference.GetSize()
    planes: dict[float, list[np.ndarray]] = {}
    for contour in roi.contours:
        index = contour @ to_index[:3, :3].T + to_index[:3, 3]
        if np.ptp(index[:, 2]) > PLANE_TOLERANCE:
            raise InputError(f"ROI '{roi.name}': its contours are not parallel to the image slices; rasterise it "
                             "on the series it was drawn on")
        planes.setdefault(round(float(index[:, 2].mean()), 2), []).append(index[:, :2])
    levels = np.array(sorted(planes))
    reach = max(0.5, float(np.median(np.diff(levels))) / 2 if len(levels) > 1 else 0.5)
    mask = np.zeros(size[::-1], dtype=bool)
    for k in range(size[2]):
        nearest = levels[np.argmin(np.abs(levels - k))]
        if abs(nearest - k) <= reach + 1e-6:
            mask[k] = _fill_plane(size[:2], planes[float(nearest)])
    return mask


def rasterise_structure_set(path, reference: sitk.Image, frame_of_reference_uid: str | None = None
                            ) -> tuple[sitk.Image, dict[int, str]]:
    """A UInt8 labelmap of every ROI on `reference`'s grid and the ROI name of each label value.

    With `frame_of_reference_uid` (the reference series'), an RTSTRUCT drawn in another frame is refused."""
    structures = read_structure_set(path)
    if frame_of_reference_uid and structures.frame_of_reference_uid not in ("", frame_of_reference_uid):
        raise InputError(f"{Path(path).name} is drawn in another frame of reference than its image series")
    if len(structures.rois) > 255:
        raise InputError(f"{Path(path).name} holds more than 255 ROIs")
    to_index = np.linalg.inv(index_to_physical_matrix(reference))
    labels = np.zeros(reference.GetSize()[::-1], dtype=np.uint8)
    names = {}
    for value, roi in enumerate(structures.rois, start=1):
        labels[_roi_mask(roi, reference, to_index)] = value
        names[value] = roi.name
    image = sitk.GetImageFromArray(labels)
    image.CopyInformation(reference)
    return image, names
