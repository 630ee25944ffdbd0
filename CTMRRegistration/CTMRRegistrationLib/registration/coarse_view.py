"""One image at coarse isotropic resolution, with what pose scoring reads from it precomputed."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import SimpleITK as sitk

from ..core.imaging import index_to_physical_matrix, resample_isotropic
from ..core.masks import foreground_mask

INTENSITY_BINS = 16
MASK_POINTS = 1000
SEED = 20261121


def _normalised_gradient(array: np.ndarray, linear: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Physical (LPS) gradient divided by sqrt(|g|^2 + eps^2), eps the median norm inside the mask."""
    index_gradient = np.stack(np.gradient(array), axis=-1)[..., ::-1]
    gradient = index_gradient @ np.linalg.inv(linear)
    norms = np.linalg.norm(gradient, axis=-1, keepdims=True)
    epsilon = np.median(norms[mask]) if mask.any() else np.median(norms)
    return gradient / np.sqrt(norms**2 + epsilon**2 + 1e-12)


def _intensity_bins(array: np.ndarray) -> np.ndarray:
    low, high = np.percentile(array, [0.5, 99.5])
    scaled = (array - low) / max(high - low, 1e-6) * INTENSITY_BINS
    return np.clip(scaled, 0, INTENSITY_BINS - 1).astype(np.int64)


@dataclass(frozen=True)
class CoarseView:
    """Coarse image, its mask and, per voxel, the channels (mask, intensity bin, normalised gradient xyz)."""

    image: sitk.Image
    mask: sitk.Image
    channels: np.ndarray  # (z, y, x, 5) float32
    physical_from_index: np.ndarray  # 4x4, continuous (x, y, z) index -> LPS
    mask_points: np.ndarray  # (n, 3) LPS points spread over the mask
    centroid: np.ndarray  # LPS centroid of the mask

    @classmethod
    def build(cls, image: sitk.Image, modality: str, spacing_mm: float) -> CoarseView:
        coarse = resample_isotropic(image, spacing_mm)
        mask = foreground_mask(coarse, modality)
        array = sitk.GetArrayFromImage(coarse)
        inside = sitk.GetArrayFromImage(mask) > 0
        if not inside.any():
            inside = np.ones_like(inside)
        physical_from_index = index_to_physical_matrix(coarse)
        channels = np.concatenate(
            [
                inside[..., None],
                _intensity_bins(array)[..., None],
                _normalised_gradient(array, physical_from_index[:3, :3], inside),
            ],
            axis=-1,
        ).astype(np.float32)
        voxels = np.argwhere(inside)[:, ::-1].astype(float)
        centroid = physical_from_index[:3, :3] @ voxels.mean(axis=0) + physical_from_index[:3, 3]
        if len(voxels) > MASK_POINTS:
            voxels = voxels[np.random.default_rng(SEED).choice(len(voxels), MASK_POINTS, replace=False)]
        points = voxels @ physical_from_index[:3, :3].T + physical_from_index[:3, 3]
        return cls(coarse, mask, channels, physical_from_index, points, centroid)

    @property
    def index_from_physical(self) -> np.ndarray:
        return np.linalg.inv(self.physical_from_index)

    def voxel_index(self, points: np.ndarray, matrices: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Flat index of the nearest voxel of each LPS point (0 where outside), and whether it is inside; with
        (n, 4, 4) `matrices`, of the points mapped by each in turn (n * len(points) rows)."""
        to_index = self.index_from_physical if matrices is None else self.index_from_physical @ matrices
        to_index = to_index.reshape(-1, 4, 4)
        # one product per matrix, each axis contiguous: per-axis compares beat a reduction over rows of 3
        index = to_index[:, :3, :3] @ points.T + to_index[:, :3, 3:]  # (n, 3, points)
        nearest = np.floor(index + 0.5).astype(np.int32).transpose(1, 0, 2).reshape(3, -1)
        size_z, size_y, size_x = self.channels.shape[:3]
        column, row, plane = nearest.view(np.uint32)
        inside = (column < size_x) & (row < size_y) & (plane < size_z)
        flat = (nearest[2] * size_y + nearest[1]) * size_x + nearest[0]
        return np.where(inside, flat, 0), inside

    def contains(self, points: np.ndarray, matrices: np.ndarray | None = None) -> np.ndarray:
        return self.voxel_index(points, matrices)[1]

    def sample(self, points: np.ndarray, matrices: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Channels at the nearest voxel of each LPS point (mapped by each of `matrices`, see `voxel_index`), and
        whether the point lies inside the grid."""
        flat, inside = self.voxel_index(points, matrices)
        return self.channels.reshape(-1, self.channels.shape[-1])[flat], inside

    def mirrored(self) -> CoarseView:
        """The same view with its header reflected left-right through the mask centroid."""
        reflect = np.eye(4)
        reflect[0, 0] = -1.0
        reflect[:3, 3] = self.centroid - reflect[:3, :3] @ self.centroid
        physical_from_index = reflect @ self.physical_from_index
        image = sitk.Image(self.image)
        spacing = np.asarray(image.GetSpacing())
        image.SetDirection((physical_from_index[:3, :3] / spacing).ravel().tolist())
        image.SetOrigin(physical_from_index[:3, 3].tolist())
        mask = sitk.Image(self.mask)
        mask.CopyInformation(image)
        channels = self.channels.copy()
        channels[..., 2] *= -1.0
        points = self.mask_points @ reflect[:3, :3].T + reflect[:3, 3]
        return replace(self, image=image, mask=mask, channels=channels,
                       physical_from_index=physical_from_index, mask_points=points)
