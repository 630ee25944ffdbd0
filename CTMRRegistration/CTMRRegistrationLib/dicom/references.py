"""Modules that DICOM objects derived from image series share: patient and study copied from a series, content
date and time, and the Common Instance Reference module naming every referenced image."""

from __future__ import annotations

from datetime import datetime

from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from .series import DicomSeries

PATIENT_AND_STUDY = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex",
    "StudyInstanceUID", "StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber",
)
MAX_LENGTH = {"SH": 16, "LO": 64}


def content_now() -> tuple[str, str]:
    """DICOM DA and TM strings of the present moment."""
    now = datetime.now()
    return now.strftime("%Y%m%d"), now.strftime("%H%M%S")


def copy_patient_and_study(source: Dataset, target: Dataset) -> None:
    """The Patient and General Study attributes of `source` (empty where it has none: they are type 2), cut to
    the length their VR allows (some archives write longer ones, which validators reject)."""
    for keyword in PATIENT_AND_STUDY:
        value = source.get(keyword)
        limit = MAX_LENGTH.get(dictionary_VR(keyword))
        setattr(target, keyword, str(value)[:limit] if limit and value else value)


def _series_item(series: DicomSeries) -> Dataset:
    item = Dataset()
    item.SeriesInstanceUID = series.series_uid
    item.ReferencedInstanceSequence = image_references(series)
    return item


def reference_series(dataset: Dataset, *series: DicomSeries) -> None:
    """Fill the Common Instance Reference module: series of the dataset's study in Referenced Series Sequence,
    the others under Studies Containing Other Referenced Instances."""
    same_study = [s for s in series if s.study_uid == dataset.StudyInstanceUID]
    if same_study:
        dataset.ReferencedSeriesSequence = Sequence([_series_item(s) for s in same_study])
    other_studies: dict[str, list[DicomSeries]] = {}
    for item in series:
        if item.study_uid != dataset.StudyInstanceUID:
            other_studies.setdefault(item.study_uid, []).append(item)
    if other_studies:
        studies = []
        for study_uid, members in other_studies.items():
            study = Dataset()
            study.StudyInstanceUID = study_uid
            study.ReferencedSeriesSequence = Sequence([_series_item(s) for s in members])
            studies.append(study)
        dataset.StudiesContainingOtherReferencedInstancesSequence = Sequence(studies)


def image_references(series: DicomSeries) -> Sequence:
    """A Referenced Image Sequence naming every instance of `series`."""
    references = []
    for uid in series.sop_instance_uids:
        reference = Dataset()
        reference.ReferencedSOPClassUID = series.sop_class_uid
        reference.ReferencedSOPInstanceUID = uid
        references.append(reference)
    return Sequence(references)
