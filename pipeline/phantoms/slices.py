"""Phantom T1-contrast head slices with one tumour each, written in the figshare MAT-file layout.

The phantom stands in for the real dataset wherever it is absent (demo, smoke runs, tests): every
command reads it exactly like the originals. Geometry is expressed in units of the image half-width
(the image spans -1..1 on both axes, rows growing downward) and in the head's own elliptic frame
(``rho`` = 1 on the outline of the head), so any slice size gives the same anatomy.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy import ndimage

from pipeline.data.errors import DatasetError
from pipeline.data.figshare import write_cvind, write_figshare_slice
from pipeline.data.sources import CVIND_NAME
from pipeline.data.tumor_types import TUMOR_TYPES
from pipeline.phantoms.defaults import (
    DEFAULT_PATIENTS,
    DEFAULT_SIZE,
    DEFAULT_SLICES_PER_PATIENT,
    FOLDS,
    MIN_SIZE,
)


@dataclass(frozen=True)
class HeadAnatomy:
    """One patient's head: outline, tissue layers (as fractions of ``rho``), intensities and ventricles.

    Args:
        center: (x, y) of the head centre in image units.
        radii: (x, y) semi-axes of the head outline in image units.
        angle: rotation of the head in radians.
        scalp: thickness of the bright scalp/fat ring, in ``rho``.
        skull: thickness of the dark bone ring, in ``rho``.
        csf: thickness of the dark CSF rim around the brain, in ``rho``.
        brain: mean brain intensity in scanner units.
        scalp_gain: scalp intensity relative to brain.
        ventricle_size: scale of the ventricles (1 is typical).
        noise: standard deviation of the Rician noise in scanner units.
        offset: value subtracted after noise; a positive offset gives some negative pixels, as a few
            figshare slices have.
    """

    center: tuple[float, float]
    radii: tuple[float, float]
    angle: float
    scalp: float
    skull: float
    csf: float
    brain: float
    scalp_gain: float
    ventricle_size: float
    noise: float
    offset: float

    @property
    def brain_edge(self) -> float:
        """``rho`` of the brain surface (inside the CSF rim)."""
        return 1.0 - self.scalp - self.skull - self.csf

    def along_axes(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Offsets of image points from the head centre across and along the head's long axis (image units)."""
        dx, dy = x - self.center[0], y - self.center[1]
        cos, sin = np.cos(self.angle), np.sin(self.angle)
        return dx * cos + dy * sin, dy * cos - dx * sin

    def to_image(self, x_head: float, y_head: float) -> tuple[float, float]:
        """Image coordinates of a point given in the head frame (``rho`` units along the head's axes)."""
        x, y = x_head * self.radii[0], y_head * self.radii[1]
        cos, sin = np.cos(self.angle), np.sin(self.angle)
        return self.center[0] + x * cos - y * sin, self.center[1] + x * sin + y * cos


@dataclass(frozen=True)
class Tumour:
    """One patient's tumour, as it appears in the slice through its middle.

    Args:
        tumor_type: 1 meningioma, 2 glioma, 3 pituitary.
        center: (x, y) in the head frame (``rho`` units).
        radius: mean radius in image units.
        harmonics: (k, amplitude, phase) rows shaping the outline ``r(theta)``.
        gain: intensity relative to brain.
        ring: whether the tumour enhances at its rim around a dark necrotic core (glioma only).
    """

    tumor_type: int
    center: tuple[float, float]
    radius: float
    harmonics: np.ndarray
    gain: float
    ring: bool


@dataclass(frozen=True)
class PhantomPatient:
    """A phantom patient: id in one of the figshare styles, tumour type and cross-validation fold."""

    pid: str
    tumor_type: int
    fold: int


@lru_cache(maxsize=4)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (x, y) in image units, shape (size, size) each; cached, never modified."""
    axis = ((np.arange(size, dtype=np.float32) + 0.5) / size) * 2.0 - 1.0
    return np.meshgrid(axis, axis)


@lru_cache(maxsize=8)
def _low_frequencies(size: int, cells: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row and column indices of the spectrum's lowest frequencies (up to ``cells / 2``) and their Gaussian taper."""
    half = max(1, cells // 2)
    row_frequencies = np.fft.fftfreq(size, 1.0 / size)
    rows = np.flatnonzero(np.abs(row_frequencies) <= half)
    cols = np.arange(half + 1)
    taper = np.exp(-0.5 * (row_frequencies[rows, None] ** 2 + cols[None, :] ** 2) / (0.5 * half) ** 2)
    return rows[:, None], cols[None, :], taper


def _smooth_field(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Zero-mean unit-variance noise varying over about ``size / cells`` pixels, shape (size, size)."""
    rows, cols, taper = _low_frequencies(size, cells)
    # Random low frequencies turned into an image by one inverse FFT: smooth and fast, and unlike
    # BLAS-based smoothing it does not stall on thread contention on a small, busy machine.
    spectrum = np.zeros((size, size // 2 + 1), dtype=np.complex128)
    spectrum[rows, cols] = taper * (rng.standard_normal(taper.shape) + 1j * rng.standard_normal(taper.shape))
    field = np.fft.irfft2(spectrum, s=(size, size)).astype(np.float32)
    return (field - field.mean()) / (field.std() + 1e-6)


def _new_head(rng: np.random.Generator) -> HeadAnatomy:
    """A random head within the range of adult heads filling most of a figshare slice."""
    return HeadAnatomy(
        center=(rng.normal(0.0, 0.03), rng.normal(0.0, 0.03)),
        radii=(rng.uniform(0.64, 0.74), rng.uniform(0.78, 0.88)),
        angle=rng.normal(0.0, 0.08),
        scalp=rng.uniform(0.045, 0.075),
        skull=rng.uniform(0.03, 0.05),
        csf=rng.uniform(0.012, 0.02),
        brain=rng.uniform(330.0, 470.0),
        scalp_gain=rng.uniform(1.7, 2.2),
        ventricle_size=rng.uniform(0.7, 1.3),
        noise=rng.uniform(6.0, 16.0),
        offset=rng.uniform(5.0, 20.0) if rng.random() < 0.2 else 0.0,
    )


def _harmonics(rng: np.random.Generator, orders: int, irregularity: float) -> np.ndarray:
    """Random outline lobes of orders 2.. with amplitudes falling as 1/k: higher ``irregularity``, rougher outline."""
    k = np.arange(2, 2 + orders, dtype=np.float64)
    return np.stack([k, rng.uniform(0.3, 1.0, orders) * irregularity / k, rng.uniform(0, 2 * np.pi, orders)], axis=1)


def _new_tumour(rng: np.random.Generator, tumor_type: int, head: HeadAnatomy) -> Tumour:
    """Place a tumour where its type grows: meningioma on the brain surface, glioma inside, pituitary at the sella."""
    if tumor_type == 1:
        theta = rng.uniform(-1.25 * np.pi, 0.25 * np.pi)  # the convexity and the sides, not the skull base
        radius = rng.uniform(0.07, 0.15)
        depth = head.brain_edge - 0.45 * radius / np.mean(head.radii)
        center = (depth * np.cos(theta), depth * np.sin(theta))
        return Tumour(1, center, radius, _harmonics(rng, 3, 0.12), rng.uniform(1.8, 2.2), ring=False)
    if tumor_type == 2:
        theta, depth = rng.uniform(-np.pi, np.pi), rng.uniform(0.3, 0.55) * head.brain_edge
        center = (depth * np.cos(theta), depth * np.sin(theta))
        radius = rng.uniform(0.09, 0.18)
        return Tumour(2, center, radius, _harmonics(rng, 5, 0.35), rng.uniform(1.4, 1.9), ring=rng.random() < 0.6)
    if tumor_type == 3:
        center = (rng.normal(0.0, 0.03), head.brain_edge * rng.uniform(0.36, 0.44))
        return Tumour(3, center, rng.uniform(0.035, 0.07), _harmonics(rng, 2, 0.1), rng.uniform(1.5, 1.9), ring=False)
    raise ValueError(f"unknown tumour type {tumor_type!r}: expected one of {sorted(TUMOR_TYPES)}")


def _window(center: tuple[float, float], reach: float, size: int) -> tuple[slice, slice]:
    """Rows and columns of the pixels within ``reach`` image units of ``center``: local shapes are drawn there only."""

    def span(coordinate: float) -> slice:
        low = int(np.floor((coordinate - reach + 1.0) * size / 2.0))
        high = int(np.ceil((coordinate + reach + 1.0) * size / 2.0))
        return slice(min(max(low, 0), size), min(max(high, 0), size))

    return span(center[1]), span(center[0])


def _ellipse(x: np.ndarray, y: np.ndarray, center, radii, angle: float) -> np.ndarray:
    """Elliptic radius (1 on the outline) of every pixel for an ellipse in image units."""
    dx, dy = x - center[0], y - center[1]
    cos, sin = np.cos(angle), np.sin(angle)
    return np.hypot((dx * cos + dy * sin) / radii[0], (dy * cos - dx * sin) / radii[1])


def _blob(x: np.ndarray, y: np.ndarray, center, radius: float, harmonics: np.ndarray) -> np.ndarray:
    """Distance to ``center`` over the lobed radius ``r(theta)``: below 1 inside the blob."""
    dx, dy = x - center[0], y - center[1]
    theta = np.arctan2(dy, dx)
    outline = np.ones_like(theta)
    for k, amplitude, phase in harmonics:
        outline += amplitude * np.cos(k * theta + phase)
    return np.hypot(dx, dy) / (radius * outline)


def _paint_layers(image: np.ndarray, rho: np.ndarray, fine: np.ndarray, coarse: np.ndarray, head: HeadAnatomy) -> None:
    """Paint the tissue layers from the outside in: scalp/fat, skull, CSF, brain with grey/white texture."""
    edges = np.array([head.brain_edge, 1.0 - head.scalp - head.skull, 1.0 - head.scalp, 1.0], dtype=np.float32)
    level = np.array([1.0, 0.35, 0.12, head.scalp_gain, 0.0], dtype=np.float32) * head.brain
    textured = np.array([1.0, 0.0, 0.0, 1.0, 0.0], dtype=np.float32)
    layer = np.searchsorted(edges, rho)
    # Grey/white matter contrast: smooth texture pushed towards two levels.
    texture = 0.07 * np.tanh(2.5 * fine) + 0.03 * coarse
    image[...] = level[layer] * (1.0 + textured[layer] * texture)


def _draw_midline_and_ventricles(
    image: np.ndarray, x: np.ndarray, y: np.ndarray, inside: np.ndarray, head: HeadAnatomy, depth: float
) -> None:
    """Darken the interhemispheric fissure and, in the middle slices of the head, the lateral ventricles."""
    size = image.shape[0]
    # The fissure is a thin line along the head's long axis, in its upper half.
    top = head.to_image(0.0, -0.5 * head.brain_edge)
    rows, cols = _window(top, 0.5 * head.brain_edge * max(head.radii), size)
    across, along = head.along_axes(x[rows, cols], y[rows, cols])
    image[rows, cols][inside[rows, cols] & (np.abs(across) < 0.006) & (along < 0.0)] *= 0.6
    scale = head.ventricle_size * max(0.0, 1.0 - 1.2 * abs(depth))  # the ventricles shrink away from mid-head
    if scale < 0.2:
        return
    for side in (-1.0, 1.0):
        center, radii = head.to_image(side * 0.11, -0.08), (0.045 * scale, 0.2 * scale)
        rows, cols = _window(center, max(radii), size)
        horn = _ellipse(x[rows, cols], y[rows, cols], center, radii, head.angle + side * 0.25) <= 1.0
        image[rows, cols][horn] = 0.3 * head.brain


def _draw_bright_spots(
    image: np.ndarray, x: np.ndarray, y: np.ndarray, rng: np.random.Generator, head: HeadAnatomy
) -> None:
    """Bright structures that are not tumour: vessels anywhere and the cavernous sinuses beside the sella."""
    spots = [(head.to_image(side * 0.17, head.brain_edge * 0.4), 0.028) for side in (-1.0, 1.0)]
    for _ in range(int(rng.integers(3, 9))):
        spots.append((head.to_image(*rng.uniform(-0.7, 0.7, 2) * head.brain_edge), rng.uniform(0.005, 0.014)))
    for center, radius in spots:
        rows, cols = _window(center, radius, image.shape[0])
        disc = (x[rows, cols] - center[0]) ** 2 + (y[rows, cols] - center[1]) ** 2 <= radius**2
        image[rows, cols][disc] = head.brain * rng.uniform(1.6, 2.0)


def _draw_tumour(
    image: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    rho: np.ndarray,
    texture: np.ndarray,
    head: HeadAnatomy,
    tumour: Tumour,
    depth: float,
) -> np.ndarray:
    """Paint ``tumour`` into ``image`` in place and return its mask (uint8, full size)."""
    radius = tumour.radius * np.sqrt(1.0 - 0.7 * depth**2)  # a roughly spherical tumour cut off-centre
    harmonics = tumour.harmonics.copy()
    harmonics[:, 2] += 0.3 * depth  # the outline twists a little from slice to slice
    center = head.to_image(*tumour.center)
    # Glioma oedema reaches 1.5 radii; the lobes add at most the sum of the harmonic amplitudes.
    rows, cols = _window(center, 1.5 * radius * (1.0 + np.abs(harmonics[:, 1]).sum()), image.shape[0])
    patch, rho, texture = image[rows, cols], rho[rows, cols], texture[rows, cols]
    ratio = _blob(x[rows, cols], y[rows, cols], center, radius, harmonics)
    # Meningiomas grow from the dura: they fill the CSF rim up to the inner skull, never beyond.
    reach = head.brain_edge + (head.csf if tumour.tumor_type == 1 else 0.0)
    inside = (ratio < 1.0) & (rho <= reach)
    brain = head.brain
    if tumour.tumor_type == 2:
        patch[(ratio < 1.5) & ~inside & (rho <= head.brain_edge)] *= 0.8  # oedema: darker on T1
        if tumour.ring:
            core = inside & (ratio < 0.65)
            patch[inside] = brain * tumour.gain * (1.0 + 0.1 * texture[inside])
            patch[core] = brain * 0.5 * (1.0 + 0.15 * texture[core])
        else:
            patch[inside] = brain * tumour.gain * (0.8 + 0.25 * np.tanh(2.0 * texture[inside]))
    else:
        patch[inside] = brain * tumour.gain * (1.0 + 0.04 * texture[inside])
    mask = np.zeros(image.shape, dtype=np.uint8)
    mask[rows, cols] = inside
    return mask


def _render(
    rng: np.random.Generator, head: HeadAnatomy, tumour: Tumour, depth: float, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Draw the slice at ``depth`` (-1..1 through the tumour, 0 its middle): (image int16, mask uint8)."""
    x, y = _grid(size)
    fine, coarse = _smooth_field(rng, size, max(8, size // 16)), _smooth_field(rng, size, 6)
    shrink = np.sqrt(1.0 - 0.15 * depth**2)  # the head narrows away from its middle slice
    rho = _ellipse(x, y, head.center, (head.radii[0] * shrink, head.radii[1] * shrink), head.angle)
    rho *= 1.0 + 0.015 * coarse  # a slightly irregular outline
    image = np.empty_like(x)
    _paint_layers(image, rho, fine, coarse, head)
    _draw_midline_and_ventricles(image, x, y, rho <= head.brain_edge, head, depth)
    _draw_bright_spots(image, x, y, rng, head)
    mask = _draw_tumour(image, x, y, rho, fine, head, tumour, depth)
    image = ndimage.gaussian_filter(image, 0.7)  # partial volume at tissue borders
    image *= np.exp(0.12 * coarse + 0.1 * (x * rng.normal() + y * rng.normal()))  # coil bias field
    noise = rng.standard_normal((2, size, size), dtype=np.float32) * np.float32(head.noise)
    image = np.hypot(image + noise[0], noise[1]) - np.float32(head.offset)  # magnitude of complex noise: Rician
    return np.round(image).astype(np.int16), mask


def make_phantom_slice(rng: np.random.Generator, tumor_type: int, size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """One phantom slice of a new random head with a tumour of ``tumor_type``: (image int16, mask uint8 0/1)."""
    head = _new_head(rng)
    return _render(rng, head, _new_tumour(rng, tumor_type, head), rng.uniform(-0.5, 0.5), size)


def patient_slices(
    seed: int, index: int, tumor_type: int, slices: int, size: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The ``slices`` neighbouring slices of cohort patient ``index`` through its tumour: (image int16, mask uint8).

    Each patient draws from its own stream, so one patient's slices do not depend on the others'; the same
    arguments give the same pixels in every layout that writes them (MAT files, DICOM series).
    """
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1, index)))
    head = _new_head(rng)
    tumour = _new_tumour(rng, tumor_type, head)
    depths = np.linspace(-0.8, 0.8, slices) if slices > 1 else np.zeros(1)
    return [_render(rng, head, tumour, float(depth), size) for depth in depths]


def _patient_ids(rng: np.random.Generator, count: int) -> list[str]:
    """Unique ids in both figshare styles: numeric strings (``100360``) and ``MR`` + 6 digits (``MR048294``)."""
    numbers = rng.choice(np.arange(90000, 110000), size=count, replace=False)
    return [f"MR{n - 50000:06d}" if rng.random() < 1 / 3 else str(n) for n in numbers]


def _stratified_folds(rng: np.random.Generator, tumor_types: list[int], folds: int) -> list[int]:
    """Deal each tumour type's patients round the folds in random order, continuing where the last type stopped."""
    assignment = [0] * len(tumor_types)
    dealt = 0
    for code in sorted(set(tumor_types)):
        members = rng.permutation([index for index, value in enumerate(tumor_types) if value == code])
        for index in members:
            assignment[index] = dealt % folds + 1
            dealt += 1
    return assignment


def _make_patients(rng: np.random.Generator, count: int, folds: int = FOLDS) -> list[PhantomPatient]:
    """``count`` patients with tumour types balanced across them and a patient-wise fold stratified by type."""
    tumor_types = [int(code) for code in rng.permutation(np.resize(sorted(TUMOR_TYPES), count))]
    fold_of = _stratified_folds(rng, tumor_types, folds)
    return [
        PhantomPatient(pid, code, fold)
        for pid, code, fold in zip(_patient_ids(rng, count), tumor_types, fold_of, strict=True)
    ]


def phantom_cohort(patients: int, seed: int = 0) -> list[PhantomPatient]:
    """The patients ``synthesize_dataset(..., patients, seed=seed)`` writes, in the order it writes them."""
    return _make_patients(np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,))), patients)


def synthesize_dataset(
    out_dir: str | os.PathLike,
    patients: int = DEFAULT_PATIENTS,
    slices_per_patient: int = DEFAULT_SLICES_PER_PATIENT,
    size: int = DEFAULT_SIZE,
    seed: int = 0,
) -> list[Path]:
    """Write a phantom dataset in the figshare layout: ``1.mat`` ... ``N.mat`` and ``cvind.mat``.

    Slices are numbered patient after patient; ``cvind.mat`` gives every slice its patient's fold
    (5 folds, stratified by tumour type). The same arguments give the same pixels. Refuses (with a
    ``DatasetError``) a folder that already holds ``.mat`` files, so no user file is overwritten.
    Returns the slice files in order.
    """
    out = Path(out_dir)
    if patients < 1 or slices_per_patient < 1 or size < MIN_SIZE:
        raise ValueError(
            f"synthesize_dataset: need patients >= 1, slices_per_patient >= 1 and size >= {MIN_SIZE}, "
            f"got {patients}, {slices_per_patient}, {size}"
        )
    if out.is_dir() and any(out.glob("*.mat")):
        raise DatasetError([f"{out}: already holds .mat files; choose an empty or new folder"])
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    folds: list[int] = []
    for index, patient in enumerate(phantom_cohort(patients, seed)):
        for image, mask in patient_slices(seed, index, patient.tumor_type, slices_per_patient, size):
            path = out / f"{len(written) + 1}.mat"
            write_figshare_slice(path, image, mask, patient.tumor_type, patient.pid)
            written.append(path)
            folds.append(patient.fold)
    write_cvind(out / CVIND_NAME, folds)
    return written
