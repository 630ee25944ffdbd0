"""Registration starts again from the pose search's next candidates when its winner ends without overlap."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import SimpleITK as sitk

from CTMRRegistrationLib import RegistrationOptions, register_images
from CTMRRegistrationLib.core.errors import NoOverlapError
from CTMRRegistrationLib.registration import pipeline

SHIFT = np.eye(4)
SHIFT[:3, 3] = (5.0, 0.0, 0.0)
SEARCH = {"method": "search", "alternatives": [
    {"matrix": np.eye(4).tolist(), "score": 3.0, "mirrored": True},
    {"matrix": SHIFT.tolist(), "score": 2.0, "mirrored": False},
    {"matrix": np.eye(4).tolist(), "score": 1.0, "mirrored": False},
]}


def fake_register(outcomes: dict):
    """A stand-in for pipeline._register: raises or returns per start (None: the search's winner)."""
    starts = []

    def register(fixed, moving, options, progress, cancelled):
        start = None if options.initial_matrix is None else np.asarray(options.initial_matrix)
        starts.append(start)
        outcome = outcomes[None if start is None else float(start[0, 3])]
        if isinstance(outcome, Exception):
            raise outcome
        return replace(outcome, metrics={"initialization": {"method": "given"}})

    return register, starts


def no_overlap(search: dict | None, swapped: bool = False) -> NoOverlapError:
    error = NoOverlapError("the images do not overlap after registration")
    error.search, error.swapped = search, swapped
    return error


@pytest.fixture
def image():
    return sitk.Image(8, 8, 8, sitk.sitkFloat32)


def test_the_next_candidate_not_mirrored_is_tried_and_reported(monkeypatch, image):
    done = pipeline.RegistrationResult(sitk.Transform(), sitk.Transform(), "CT", "MR")
    register, starts = fake_register({None: no_overlap(SEARCH), 5.0: done})
    monkeypatch.setattr(pipeline, "_register", register)
    result = register_images(image, image, RegistrationOptions())
    assert len(starts) == 2 and np.allclose(starts[1], SHIFT)
    initialization = result.metrics["initialization"]
    assert initialization["started_from"]["start"] == "search candidate 2"
    assert [c["score"] for c in initialization["alternatives"]] == [3.0, 1.0]


def test_swapped_search_candidates_are_inverted(monkeypatch, image):
    done = pipeline.RegistrationResult(sitk.Transform(), sitk.Transform(), "MR", "CT")
    register, starts = fake_register({None: no_overlap(SEARCH, swapped=True), -5.0: done})
    monkeypatch.setattr(pipeline, "_register", register)
    register_images(image, image, RegistrationOptions())
    assert np.allclose(starts[1], np.linalg.inv(SHIFT))


def test_the_first_error_stands_when_no_candidate_overlaps_or_there_was_no_search(monkeypatch, image):
    first = no_overlap(SEARCH)
    register, starts = fake_register({None: first, 5.0: no_overlap(None), 0.0: no_overlap(None)})
    monkeypatch.setattr(pipeline, "_register", register)
    with pytest.raises(NoOverlapError) as raised:
        register_images(image, image, RegistrationOptions())
    assert raised.value is first and len(starts) == 3
    register, starts = fake_register({None: no_overlap(None)})
    monkeypatch.setattr(pipeline, "_register", register)
    with pytest.raises(NoOverlapError):
        register_images(image, image, RegistrationOptions())
    assert len(starts) == 1
