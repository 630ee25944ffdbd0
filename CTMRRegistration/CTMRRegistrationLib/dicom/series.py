"""DICOM image series in a folder: discovery (pydicom headers), choice, geometry checks, reading (SimpleITK/GDCM).

A series is accepted when its slices share one orientation, size and pixel spacing, and their positions lie
on the slice normal at regular steps. Missing slices, duplicated positions, irregular steps, mixed sizes or
orientations and gantry tilt (positions off the normal) are refused with a one-line InputError: resampling
such stacks silently would move anatomy. Patient name and ID are never put into messages.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.errors import InvalidDicomError

from ..core.errors import InputError
from ..core.imaging import DICOM_MODALITY_TAG

SPACING_TOLERANCE = 0.01  # relative difference allowed between slice steps
DIRECTION_TOLERANCE = 1e-4


@dataclass(frozen=True)
class DicomSeries:
    """One image series: its identity, its slices sorted along the slice normal, and the first slice's header."""

    series_uid: str
    modality: str
    description: str
    files: tuple[Path, ...]
    header: pydicom.Dataset = field(repr=False, compare=False)
    sop_instance_uids: tuple[str, ...] = ()

    @property
    def frame_of_reference_uid(self) -> str:
        return str(self.header.get("FrameOfReferenceUID", ""))

    @property
    def study_uid(self) -> str:
        return str(self.header.get("StudyInstanceUID", ""))

    @property
    def sop_class_uid(self) -> str:
        return str(self.header.SOPClassUID)

    @property
    def size(self) -> tuple[int, int, int]:
        return int(self.header.Columns), int(self.header.Rows), len(self.files)

    def summary(self) -> str:
        """One line naming the series without patient data: UID, modality, description, slices, size."""
        columns, rows, slices = self.size
        return (f"{self.series_uid}  {self.modality or '?'}  '{self.description}'  {slices} slices  "
                f"{columns}x{rows}")


def _is_image(dataset: pydicom.Dataset) -> bool:
    return all(key in dataset for key in ("SeriesInstanceUID", "ImagePositionPatient", "ImageOrientationPatient",
                                          "Rows", "Columns", "PixelSpacing"))


def _headers(folder: Path) -> list[tuple[Path, pydicom.Dataset]]:
    """(path, header) of every DICOM image file under `folder` (recursively); other files are skipped."""
    found = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            dataset = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError, TypeError, AttributeError, KeyError):
            continue
        if _is_image(dataset):
            found.append((path, dataset))
    return found


def find_series(folder) -> list[DicomSeries]:
    """Every image series under `folder`, slices in file order (not yet checked nor sorted)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"DICOM folder not found: {folder}")
    groups: dict[str, list[tuple[Path, pydicom.Dataset]]] = defaultdict(list)
    for path, dataset in _headers(folder):
        groups[str(dataset.SeriesInstanceUID)].append((path, dataset))
    if not groups:
        raise InputError(f"no DICOM image files found under {folder}")
    return [
        DicomSeries(uid, str(items[0][1].get("Modality", "")), str(items[0][1].get("SeriesDescription", "")),
                    tuple(p for p, _ in items), items[0][1], tuple(str(d.SOPInstanceUID) for _, d in items))
        for uid, items in groups.items()
    ]


def series_from_files(paths) -> DicomSeries:
    """The one image series made of `paths`, sorted and checked (InputError when they hold several or none)."""
    headers = [(Path(path), pydicom.dcmread(path, stop_before_pixels=True)) for path in paths]
    uids = {str(header.get("SeriesInstanceUID", "")) for _, header in headers if _is_image(header)}
    if len(uids) != 1 or not all(_is_image(header) for _, header in headers):
        raise InputError(f"the files do not form one image series ({len(uids)} series)")
    first = headers[0][1]
    series = DicomSeries(uids.pop(), str(first.get("Modality", "")), str(first.get("SeriesDescription", "")),
                         tuple(p for p, _ in headers), first, tuple(str(h.SOPInstanceUID) for _, h in headers))
    return sorted_checked(series)


def choose_series(series: list[DicomSeries], series_uid: str | None, role: str = "input") -> DicomSeries:
    """The series with `series_uid`, or the only one; otherwise an error listing every series."""
    if series_uid is not None:
        chosen = [s for s in series if s.series_uid == series_uid]
        if chosen:
            return chosen[0]
        problem = f"no series {series_uid} in the {role} folder"
    elif len(series) == 1:
        return series[0]
    else:
        problem = f"the {role} folder holds {len(series)} series: choose one with --{role}-series UID"
    listing = "; ".join(s.summary() for s in sorted(series, key=lambda s: s.series_uid))
    raise InputError(f"{problem} (series: {listing})")


def _vector(dataset: pydicom.Dataset, key: str) -> np.ndarray:
    return np.asarray([float(v) for v in dataset[key].value])


def sorted_checked(series: DicomSeries) -> DicomSeries:
    """The series with its slices sorted along the normal, after the geometry checks (InputError)."""
    headers = [pydicom.dcmread(path, stop_before_pixels=True) for path in series.files]
    name = f"series {series.series_uid}"
    if len(headers) == 1 and int(headers[0].get("NumberOfFrames", 1)) > 1:
        raise InputError(f"{name} is one multi-frame (enhanced) file: export it as single-frame slices")
    if len(headers) < 2:
        raise InputError(f"{name} has only one slice: a 3-D volume needs several")
    if len({(int(h.Rows), int(h.Columns)) for h in headers}) > 1:
        raise InputError(f"{name} mixes slice sizes ({sorted({(int(h.Columns), int(h.Rows)) for h in headers})})")
    orientation = _vector(headers[0], "ImageOrientationPatient")
    pixel_spacing = _vector(headers[0], "PixelSpacing")
    for header in headers:
        if np.abs(_vector(header, "ImageOrientationPatient") - orientation).max() > DIRECTION_TOLERANCE:
            raise InputError(f"{name} mixes slice orientations")
        if np.abs(_vector(header, "PixelSpacing") - pixel_spacing).max() > SPACING_TOLERANCE * pixel_spacing.min():
            raise InputError(f"{name} mixes pixel spacings")
    normal = np.cross(orientation[:3], orientation[3:])
    positions = np.array([_vector(h, "ImagePositionPatient") for h in headers])
    order = np.argsort(positions @ normal)
    positions, depth = positions[order], (positions @ normal)[order]
    steps = np.diff(depth)
    if steps.min() < 1e-3:
        index = int(np.argmin(steps))
        raise InputError(f"{name} has two slices at the same position ({depth[index]:.2f} mm along the normal)")
    step = float(np.median(steps))
    gaps = np.abs(steps - step) > SPACING_TOLERANCE * step
    if gaps.any():
        index = int(np.argmax(gaps))
        if abs(steps[index] / step - round(steps[index] / step)) < 0.05 and steps[index] > step:
            raise InputError(f"{name} misses {round(steps[index] / step) - 1} slice(s) between "
                             f"{depth[index]:.2f} and {depth[index + 1]:.2f} mm along the normal")
        raise InputError(f"{name} has irregular slice spacing ({steps.min():.3f} to {steps.max():.3f} mm)")
    offsets = positions - positions[0] - np.outer(depth - depth[0], normal)
    if np.linalg.norm(offsets, axis=1).max() > SPACING_TOLERANCE * step:
        raise InputError(f"{name} has slices shifted off the slice normal (gantry tilt or a sheared stack): "
                         "resample it to an orthogonal grid first")
    files = tuple(series.files[i] for i in order)
    uids = tuple(str(headers[i].SOPInstanceUID) for i in order)
    return DicomSeries(series.series_uid, series.modality, series.description, files, headers[order[0]], uids)


def _read_sorted(series: DicomSeries) -> sitk.Image:
    """A series from sorted_checked as a 3-D image (LPS, rescaled values) carrying its Modality tag."""
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(path) for path in series.files])
    try:
        image = reader.Execute()
    except RuntimeError as error:
        raise InputError(f"cannot read series {series.series_uid}: {str(error).strip().splitlines()[-1]}") from None
    if series.modality:
        image.SetMetaData(DICOM_MODALITY_TAG, series.modality)
    return image


def load_series(folder, series_uid: str | None = None, role: str = "input") -> tuple[sitk.Image, DicomSeries]:
    """Find, choose, check and read one series under `folder`: the image and the (sorted) series."""
    series = sorted_checked(choose_series(find_series(folder), series_uid, role))
    return _read_sorted(series), series
