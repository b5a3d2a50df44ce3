"""The phantom's acquisition: SAX stack and LAX planes with slice profiles, PSF, bias, Rician
noise, and the dense truth; writing a subject folder in the UK Biobank layout."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from cardiorecon.geometry import upsampled_affine, upsampled_num_slices
from cardiorecon.io.nifti import atomic_write, write_nifti
from cardiorecon.phantom.anatomy import TISSUE_TO_LABEL, Anatomy, Cohort, SubjectParams, sample_params
from cardiorecon.volume import LABELS, Volume

LAX_VIEWS = ("2ch", "3ch", "4ch")


@dataclass(frozen=True)
class AcquisitionConfig:
    """Imaging parameters of the phantom (mm)."""

    sax_spacing_mm: float = 1.8
    sax_matrix: int = 128
    slice_gap_mm: float = 10.0
    slice_thickness_mm: float = 8.0
    lax_spacing_mm: float = 1.8
    lax_matrix: int = 128
    lax_thickness_mm: float = 6.0
    truth_factor: int = 5  # truth slice step = slice_gap / truth_factor (2 mm)
    profile_step_mm: float = 1.0  # sampling step across a slice profile
    psf_sigma_px: float = 0.5
    scanner_scale: float = 1000.0  # intensities written as int16 in these units
    breath_hold_shift_mm: float = 0.0  # max per-slice in-plane shift; 0 = off
    cycle_ms: float = 900.0


def profile_offsets(thickness_mm: float, step_mm: float) -> np.ndarray:
    """Sample offsets (mm) across a box slice profile: the centres of `thickness/step` bins."""
    n = max(1, int(round(thickness_mm / step_mm)))
    return (np.arange(n) - (n - 1) / 2) * (thickness_mm / n)


def _inplane_axes(axis: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """In-plane unit axes (u_i, u_j) of a SAX plane with normal `axis`; (u_i, u_j, axis) right-handed."""
    ref = np.array([0.0, 0.0, 1.0]) if abs(axis[2]) < 0.9 else np.array([0.0, 1.0, 0.0])
    ui = np.cross(axis, ref)
    ui /= np.linalg.norm(ui)
    return ui, np.cross(axis, ui)


def sax_geometry(anatomy: Anatomy, acq: AcquisitionConfig) -> tuple[np.ndarray, int]:
    """Affine and slice count of the acquired SAX stack: slice 0 12 mm above the ED base,
    the last below the apex."""
    p = anatomy.p
    ui, uj = _inplane_axes(anatomy.a)
    first = -12.0
    last = p.lv_length_ed + p.apex_thickness * 1.4 + 6.0
    num_slices = int(np.ceil((last - first) / acq.slice_gap_mm)) + 1
    centre = anatomy.B + first * anatomy.a - p.sax_offset[0] * ui - p.sax_offset[1] * uj
    affine = np.eye(4)
    affine[:3, 0] = ui * acq.sax_spacing_mm
    affine[:3, 1] = uj * acq.sax_spacing_mm
    affine[:3, 2] = anatomy.a * acq.slice_gap_mm
    affine[:3, 3] = centre - (acq.sax_matrix - 1) / 2 * (affine[:3, 0] + affine[:3, 1])
    return affine, num_slices


def lax_geometry(anatomy: Anatomy, acq: AcquisitionConfig, view: str) -> np.ndarray:
    """Affine of a LAX plane containing the LV long axis, rotated about it by the view's angle;
    i along the plane's short-axis direction, j along the long axis toward the apex."""
    p = anatomy.p
    phi = np.radians(p.lax_angles_deg[view])
    ev = np.cos(phi) * anatomy.e1 + np.sin(phi) * anatomy.e2
    normal = np.cross(ev, anatomy.a)
    centre = anatomy.B + anatomy.a * (0.4 * p.lv_length_ed) + normal * p.lax_offsets_mm[view]
    affine = np.eye(4)
    affine[:3, 0] = ev * acq.lax_spacing_mm
    affine[:3, 1] = anatomy.a * acq.lax_spacing_mm
    affine[:3, 2] = normal * acq.lax_thickness_mm
    affine[:3, 3] = centre - (acq.lax_matrix - 1) / 2 * (affine[:3, 0] + affine[:3, 1])
    return affine


def grid_points(affine: np.ndarray, shape: tuple[int, int, int], offsets_mm: np.ndarray,
                shifts_mm: np.ndarray | None = None) -> np.ndarray:
    """World points (Z, O, X, Y, 3) of every voxel of a stack at each profile offset along the
    slice normal, optionally shifted in-plane per slice (Z, 2) mm (breath-hold misregistration)."""
    X, Y, Z = shape
    normal = np.cross(affine[:3, 0], affine[:3, 1])
    normal /= np.linalg.norm(normal)
    ii, jj = np.meshgrid(np.arange(X, dtype=np.float64), np.arange(Y, dtype=np.float64), indexing="ij")
    plane = ii[..., None] * affine[:3, 0] + jj[..., None] * affine[:3, 1] + affine[:3, 3]  # (X, Y, 3)
    pts = np.empty((Z, len(offsets_mm), X, Y, 3), dtype=np.float32)
    ui = affine[:3, 0] / np.linalg.norm(affine[:3, 0])
    uj = affine[:3, 1] / np.linalg.norm(affine[:3, 1])
    for k in range(Z):
        base = plane + k * affine[:3, 2]
        if shifts_mm is not None:
            base = base + shifts_mm[k, 0] * ui + shifts_mm[k, 1] * uj
        for o, off in enumerate(offsets_mm):
            pts[k, o] = base + off * normal
    return pts


class StackRenderer:
    """Renders one grid (many slices x profile offsets) over frames, reusing static work."""

    def __init__(self, anatomy: Anatomy, points: np.ndarray):
        self.anatomy = anatomy
        self.shape = points.shape[:-1]  # (Z, O, X, Y)
        flat = points.reshape(-1, 3)
        self.points = flat
        self.background = anatomy.background(flat)
        self.heart = anatomy.heart_mask(flat)
        self.static = anatomy.heart_static(flat[self.heart]) if self.heart.any() else None
        self.modulation = anatomy.modulation(flat)
        self.table = anatomy.intensity_table()

    def frame(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """Noise-free image averaged over the profile (Z, X, Y) and the majority label (Z, X, Y)."""
        tissue = self.anatomy.tissue(self.points, t, self.background, self.heart, self.static)
        image = (self.table[tissue] * self.modulation).reshape(self.shape).mean(axis=1)
        labels = TISSUE_TO_LABEL[tissue].reshape(self.shape)
        if self.shape[1] == 1:
            return image, labels[:, 0]
        counts = np.stack([(labels == c).sum(axis=1) for c in range(len(LABELS))])
        # Ties go to the label at the profile centre.
        centre = labels[:, self.shape[1] // 2]
        best = counts.max(axis=0)
        majority = counts.argmax(axis=0).astype(np.uint8)
        tie = (counts == best).sum(axis=0) > 1
        majority[tie] = centre[tie]
        return image, majority


def _finish(image: np.ndarray, acq: AcquisitionConfig, noise_sigma: float, rng: np.random.Generator | None) -> np.ndarray:
    """PSF blur in-plane, Rician noise (magnitude of complex Gaussian noise), scanner units."""
    img = ndimage.gaussian_filter(image, sigma=(0, acq.psf_sigma_px, acq.psf_sigma_px)) if acq.psf_sigma_px else image
    if rng is not None and noise_sigma > 0:
        n1 = rng.normal(0, noise_sigma, img.shape).astype(np.float32)
        n2 = rng.normal(0, noise_sigma, img.shape).astype(np.float32)
        img = np.sqrt((img + n1) ** 2 + n2**2)
    return img * acq.scanner_scale


@dataclass
class PhantomSubject:
    """All volumes of one generated subject, in memory."""

    params: SubjectParams
    sax: Volume
    sax_labels: Volume
    lax: dict[str, Volume]
    lax_labels: dict[str, Volume]
    truth: Volume | None
    truth_labels: Volume | None
    info: dict


def generate(params: SubjectParams, acq: AcquisitionConfig = AcquisitionConfig(), truth: bool = True,
             frames: list[int] | None = None, views: tuple[str, ...] = LAX_VIEWS) -> PhantomSubject:
    """Render a subject: SAX (X, Y, Z, T), LAX views (X, Y, 1, T), labels, and the dense truth.

    `frames` restricts rendering to some frames (for on-the-fly training data); the default is all.
    """
    anatomy = Anatomy(params)
    frames = list(range(params.num_frames)) if frames is None else list(frames)
    rng = np.random.default_rng(np.random.SeedSequence([params.seed, 7]))
    affine, Z = sax_geometry(anatomy, acq)
    M = acq.sax_matrix
    shifts = None
    if acq.breath_hold_shift_mm > 0:
        shifts = rng.uniform(-acq.breath_hold_shift_mm, acq.breath_hold_shift_mm, (Z, 2))
    sax_profile = profile_offsets(acq.slice_thickness_mm, acq.profile_step_mm)
    sax_r = StackRenderer(anatomy, grid_points(affine, (M, M, Z), sax_profile, shifts))
    sax_label_r = StackRenderer(anatomy, grid_points(affine, (M, M, Z), np.zeros(1), shifts))
    lax_r, lax_label_r, lax_affines = {}, {}, {}
    N = acq.lax_matrix
    for v in views:
        lax_affines[v] = lax_geometry(anatomy, acq, v)
        lax_r[v] = StackRenderer(anatomy, grid_points(lax_affines[v], (N, N, 1),
                                                      profile_offsets(acq.lax_thickness_mm, acq.profile_step_mm)))
        lax_label_r[v] = StackRenderer(anatomy, grid_points(lax_affines[v], (N, N, 1), np.zeros(1)))
    truth_affine = upsampled_affine(affine, acq.truth_factor)
    Zt = upsampled_num_slices(Z, acq.truth_factor)
    truth_step = acq.slice_gap_mm / acq.truth_factor
    truth_r = StackRenderer(anatomy, grid_points(truth_affine, (M, M, Zt), np.array([-1, 0, 1]) * truth_step / 3)) \
        if truth else None

    T = len(frames)
    sax = np.zeros((M, M, Z, T), np.float32)
    sax_lab = np.zeros((M, M, Z, T), np.uint8)
    lax = {v: np.zeros((N, N, 1, T), np.float32) for v in views}
    lax_lab = {v: np.zeros((N, N, 1, T), np.uint8) for v in views}
    tr = np.zeros((M, M, Zt, T), np.float32) if truth else None
    tr_lab = np.zeros((M, M, Zt, T), np.uint8) if truth else None
    sigma = params.noise_sigma
    for i, t in enumerate(frames):
        img, _ = sax_r.frame(t)
        sax[..., i] = np.moveaxis(_finish(img, acq, sigma, rng), 0, -1)
        sax_lab[..., i] = np.moveaxis(sax_label_r.frame(t)[1], 0, -1)
        for v in views:
            img, _ = lax_r[v].frame(t)
            lax[v][..., i] = np.moveaxis(_finish(img, acq, sigma, rng), 0, -1)
            lax_lab[v][..., i] = np.moveaxis(lax_label_r[v].frame(t)[1], 0, -1)
        if truth:
            img, lab = truth_r.frame(t)
            tr[..., i] = np.moveaxis(_finish(img, acq, 0.0, None), 0, -1)
            tr_lab[..., i] = np.moveaxis(lab, 0, -1)

    interval = acq.cycle_ms / params.num_frames
    sax_meta = {"slice_thickness_mm": acq.slice_thickness_mm, "frame_interval": interval}
    lax_meta = {"slice_thickness_mm": acq.lax_thickness_mm, "frame_interval": interval}
    edv, esv = anatomy.lv_volumes_ml()
    rv_edv, rv_esv = anatomy.rv_volume_ml(0), anatomy.rv_volume_ml(params.es_frame)
    info = {
        "generator": "cardiorecon.phantom",
        "cohort": params.cohort,
        "seed": params.seed,
        # Indices into the frames written (the whole cycle unless `frames` picked some).
        "ed_frame": frames.index(0) if 0 in frames else None,
        "es_frame": frames.index(params.es_frame) if params.es_frame in frames else None,
        "cycle_frames": frames,
        "lv_edv_ml": edv, "lv_esv_ml": esv, "lv_ef": (edv - esv) / edv,
        "rv_edv_ml": rv_edv, "rv_esv_ml": rv_esv, "rv_ef": (rv_edv - rv_esv) / rv_edv,
        "lv_myocardial_volume_ml": anatomy.myo_mm3 / 1000.0,
        "sax_slice_thickness_mm": acq.slice_thickness_mm,
        "lax_slice_thickness_mm": acq.lax_thickness_mm,
        "truth_slice_spacing_mm": truth_step,
        "long_axis": list(params.long_axis),
        "base_centre_mm": list(params.base_centre),
        "breath_hold_shifts_mm": None if shifts is None else shifts.round(3).tolist(),
        "acquisition": asdict(acq),
        "params": params.to_json(),
    }
    return PhantomSubject(
        params=params,
        sax=Volume(sax, affine, sax_meta),
        sax_labels=Volume(sax_lab, affine, {}),
        lax={v: Volume(lax[v], lax_affines[v], lax_meta) for v in views},
        lax_labels={v: Volume(lax_lab[v], lax_affines[v], {}) for v in views},
        truth=Volume(tr, truth_affine, {"frame_interval": interval}) if truth else None,
        truth_labels=Volume(tr_lab, truth_affine, {}) if truth else None,
        info=info,
    )


def write_subject(subject: PhantomSubject, folder: str | Path) -> Path:
    """Write a generated subject in the UK Biobank layout plus truth_* and subject.json."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    image = lambda v: v.with_data(np.clip(np.round(v.data), -32768, 32767).astype(np.int16))  # noqa: E731
    write_nifti(image(subject.sax), folder / "sa.nii.gz")
    write_nifti(subject.sax_labels, folder / "label_sa.nii.gz")
    for v, vol in subject.lax.items():
        write_nifti(image(vol), folder / f"la_{v}.nii.gz")
        write_nifti(subject.lax_labels[v], folder / f"label_la_{v}.nii.gz")
    if subject.truth is not None:
        write_nifti(image(subject.truth), folder / "truth_sa.nii.gz")
        write_nifti(subject.truth_labels, folder / "truth_label_sa.nii.gz")
    text = json.dumps(subject.info, indent=2, sort_keys=True)
    atomic_write(folder / "subject.json", lambda tmp: tmp.write_text(text))
    return folder


def generate_cohort(out: str | Path, num_subjects: int, cohort: Cohort = "healthy", seed: int = 0,
                    num_frames: int = 25, acq: AcquisitionConfig = AcquisitionConfig(),
                    progress: bool = True, truth: bool = True) -> list[Path]:
    """Generate and write `num_subjects` subjects with seeds seed, seed+1, ... under `out`."""
    out = Path(out)
    prefix = "hf" if cohort == "heart-failure" else "healthy"
    folders = []
    for i in range(num_subjects):
        t0 = time.perf_counter()
        params = sample_params(seed + i, cohort, num_frames)
        folder = write_subject(generate(params, acq, truth=truth), out / f"{prefix}_{seed + i:04d}")
        folders.append(folder)
        if progress:
            print(f"[{i + 1}/{num_subjects}] {folder} ({time.perf_counter() - t0:.1f} s)", flush=True)
    return folders
