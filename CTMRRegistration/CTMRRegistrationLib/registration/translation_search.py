"""Translation of a rotated fixed object inside the moving image, by FFT correlation of masks at coarse scale.

Aligning mask centroids assumes both images show the same extent of the object; when one shows only part
of it (a cropped CT, an MR of a sub-region), the centroids disagree by up to half the missing extent. Here,
for a given rotation, every translation on a 10 mm grid is scored at once by the Dice of the two masks
*within the field of view both images cover* (three correlations: mask with mask, each mask with the other
image's support), so that a translation is not rewarded for laying one object over the other's background
beyond its field of view. Translations sharing too little of the smaller object are not considered. Among
those within a small margin of the best, the one nearest the centroid translation is kept, so full views
keep their centroid alignment and elongated objects (a limb) are not slid along their axis at random.
"""

from __future__ import annotations

import numpy as np
from scipy import fft, ndimage

from .coarse_view import CoarseView

GRID_MM = 10.0
MIN_SHARED_FRACTION = 0.25  # of the smaller mask, that must lie in the other mask
DICE_MARGIN = 0.02
SPREAD_TRANSLATIONS = 5


def _box_corners(view: CoarseView) -> np.ndarray:
    size_z, size_y, size_x = view.channels.shape[:3]
    corners = np.array([[x, y, z] for x in (0, size_x - 1) for y in (0, size_y - 1) for z in (0, size_z - 1)], float)
    return corners @ view.physical_from_index[:3, :3].T + view.physical_from_index[:3, 3]


def _sample_on_grid(view: CoarseView, rotation: np.ndarray, spacing: float) -> tuple[np.ndarray, ...]:
    """The view's mask and support (1 inside its grid) on an LPS-aligned grid covering the view rotated by
    `rotation`: arrays (z, y, x) and the grid origin."""
    corners = _box_corners(view) @ rotation.T
    origin = np.floor(corners.min(axis=0) / spacing) * spacing
    size = np.ceil((corners.max(axis=0) - origin) / spacing).astype(int) + 1
    axes = [origin[i] + spacing * np.arange(size[i]) for i in range(3)]
    grid_x, grid_y, grid_z = np.meshgrid(*axes, indexing="ij")
    points = np.stack([grid_x, grid_y, grid_z], axis=-1).reshape(-1, 3) @ rotation  # back in the view's frame
    index = points @ view.index_from_physical[:3, :3].T + view.index_from_physical[:3, 3]
    limits = np.array(view.channels.shape[2::-1]) - 1
    support = np.all((index >= -0.5) & (index <= limits + 0.5), axis=1)
    mask = ndimage.map_coordinates(view.channels[..., 0], index[:, ::-1].T, order=1, mode="constant", cval=0.0)
    shape = tuple(size)
    return (mask.reshape(shape).transpose(2, 1, 0), support.reshape(shape).transpose(2, 1, 0).astype(float),
            origin)


def _full_shape(moving: np.ndarray, fixed: np.ndarray) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The shape of the full convolution of the two arrays, and the fast FFT shape it is padded to."""
    shape = tuple(m + f - 1 for m, f in zip(moving.shape, fixed.shape))
    return shape, tuple(fft.next_fast_len(n, real=True) for n in shape)


def _correlation(moving_spectrum: np.ndarray, fixed_spectrum: np.ndarray, shape, padded) -> np.ndarray:
    """sum_i fixed[i] * moving[i + s] for every shift s, from the spectra of moving and of fixed reversed; index
    k holds s = k - (fixed.shape - 1). A full convolution by real FFTs (scipy.signal would do the same at an
    import cost of seconds)."""
    return fft.irfftn(moving_spectrum * fixed_spectrum, padded)[tuple(slice(0, n) for n in shape)]


class TranslationSearch:
    """Best translations of the fixed object inside the moving image, one per rotation."""

    def __init__(self, fixed: CoarseView, moving: CoarseView, spacing_mm: float = GRID_MM):
        self.fixed, self.spacing = fixed, spacing_mm
        self.moving_mask, self.moving_support, self.moving_origin = _sample_on_grid(moving, np.eye(3), spacing_mm)
        self._moving_spectra: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}  # by padded shape

    def _moving(self, padded: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        """Spectra of the moving mask and support at one padded shape (rotations share a few shapes)."""
        if padded not in self._moving_spectra:
            self._moving_spectra[padded] = (fft.rfftn(self.moving_mask, padded),
                                            fft.rfftn(self.moving_support, padded))
        return self._moving_spectra[padded]

    def translations(self, pose: np.ndarray, count: int = SPREAD_TRANSLATIONS) -> np.ndarray:
        """For the rotation of the fixed->moving 4x4 `pose`: up to `count` translations (k, 3) with a
        field-of-view Dice near the best, spread apart, the one nearest the pose's own translation first
        (none when no translation shares enough of the objects)."""
        rotation = pose[:3, :3]
        fixed_mask, fixed_support, fixed_origin = _sample_on_grid(self.fixed, rotation, self.spacing)
        shape, padded = _full_shape(self.moving_mask, fixed_mask)
        moving_mask, moving_support = self._moving(padded)
        fixed_mask_spectrum = fft.rfftn(fixed_mask[::-1, ::-1, ::-1], padded)
        shared = _correlation(moving_mask, fixed_mask_spectrum, shape, padded)
        fixed_seen = _correlation(moving_support, fixed_mask_spectrum, shape, padded)
        moving_seen = _correlation(moving_mask, fft.rfftn(fixed_support[::-1, ::-1, ::-1], padded), shape, padded)
        smaller = min(fixed_mask.sum(), self.moving_mask.sum())
        dice = 2.0 * shared / np.maximum(fixed_seen + moving_seen, 1e-6)
        dice[shared < MIN_SHARED_FRACTION * smaller] = -1.0
        best = dice.max()
        if best <= 0.0:
            return np.zeros((0, 3))
        near_best = np.argwhere(dice >= best - DICE_MARGIN)  # (k, 3) z, y, x
        shifts = (near_best - (np.array(fixed_mask.shape) - 1))[:, ::-1]
        found = self.moving_origin - fixed_origin + shifts * self.spacing
        return _spread(found, pose[:3, 3], count)


def _spread(translations: np.ndarray, start: np.ndarray, count: int) -> np.ndarray:
    """`count` of `translations` by farthest-point sampling, from the one nearest `start`."""
    chosen = [int(np.argmin(np.linalg.norm(translations - start, axis=1)))]
    distance = np.linalg.norm(translations - translations[chosen[0]], axis=1)
    while len(chosen) < min(count, len(translations)):
        chosen.append(int(np.argmax(distance)))
        distance = np.minimum(distance, np.linalg.norm(translations - translations[chosen[-1]], axis=1))
    return translations[chosen]
