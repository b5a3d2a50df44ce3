"""The phantom's anatomy: subject parameters, motion, and tissue classes at world points.

Heart frame: B is the centre of the LV base (mitral) plane at end-diastole, `a` the unit LV long
axis from base to apex, `e1` the unit direction from the LV axis toward the RV, e2 = a x e1.
For a point x: s = (x - B).a (depth below the ED base plane), p = (x - B).e1, q = (x - B).e2.

LV cavity: inside a half prolate spheroid whose flat face is the base plane s = d(t) (the base
descends by d(t) toward the fixed apex), long semi-axis L(t) = L_ed - d(t), short semi-axis r(t)
from the LV volume curve: V(t) = 2/3 pi r^2 L. Epicardium: same centre, semi-axes R(t) and
L(t) + apex thickness; R(t) follows from a constant myocardial volume
Vm = 2/3 pi (R^2 (L + t_apex) - r^2 L), so the wall thickens in systole.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np

Cohort = Literal["healthy", "heart-failure"]

# Tissue classes (rendered first to last; later classes override earlier ones).
AIR, SOFT, FAT, MUSCLE, LUNG, LIVER, SPINE, DESC_AORTA, PERI_FAT = 0, 1, 2, 3, 4, 5, 6, 7, 8
VESSEL_WALL, VESSEL_BLOOD, RV_WALL, RV_BLOOD, LV_MYO, LV_BLOOD, PAPILLARY = 9, 10, 11, 12, 13, 14, 15
NUM_TISSUES = 16
VESSEL_WALL_MM = 2.5  # wall thickness of the atria, aorta and pulmonary artery
TISSUE_NAMES = ("air", "soft tissue", "fat", "muscle", "lung", "liver", "spine", "descending aorta",
                "pericardial fat", "vessel wall", "atrial/vessel blood", "RV wall", "RV blood",
                "LV myocardium", "LV blood", "papillary muscle")
#: tissue -> label (0 background, 1 LV cavity incl. papillary muscles, 2 LV myocardium, 3 RV cavity)
TISSUE_TO_LABEL = np.zeros(NUM_TISSUES, dtype=np.uint8)
TISSUE_TO_LABEL[[LV_BLOOD, PAPILLARY]] = 1
TISSUE_TO_LABEL[LV_MYO] = 2
TISSUE_TO_LABEL[RV_BLOOD] = 3

# bSSFP-like relative intensities: blood and fat bright, myocardium and lungs dark.
BASE_INTENSITY = {
    AIR: 0.0, SOFT: 0.36, FAT: 0.88, MUSCLE: 0.27, LUNG: 0.05, LIVER: 0.40, SPINE: 0.45,
    DESC_AORTA: 0.92, PERI_FAT: 0.82, VESSEL_WALL: 0.30, VESSEL_BLOOD: 0.92, RV_WALL: 0.30,
    RV_BLOOD: 0.95, LV_MYO: 0.28, LV_BLOOD: 0.97, PAPILLARY: 0.30,
}


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=float)
    return v / np.linalg.norm(v)


@dataclass(frozen=True)
class SubjectParams:
    """Everything that defines one phantom subject (JSON-serialisable)."""

    seed: int
    cohort: Cohort
    num_frames: int
    es_frame: int
    # LV at end-diastole (mm) and function
    lv_radius_ed: float
    lv_length_ed: float
    wall_thickness: float
    apex_thickness: float
    lv_ef: float
    base_descent: float
    # RV (mm), relative to the LV
    rv_offset: float
    rv_width: float
    rv_depth: float
    rv_length: float
    rv_ef: float
    # Placement (RAS mm)
    base_centre: tuple[float, float, float]
    long_axis: tuple[float, float, float]
    septal_dir: tuple[float, float, float]
    body_centre: tuple[float, float, float]
    body_semi_axes: tuple[float, float]
    fat_thickness: float
    # Papillary muscles: (angle from -e1 in rad, relative depth, size)
    papillary: tuple[tuple[float, float, float], ...]
    # Contrast and acquisition
    intensity_scale: dict[int, float]
    texture: tuple[tuple[float, float, float, float, float], ...]  # (kx, ky, kz, phase, amplitude)
    bias: tuple[tuple[float, float, float, float, float], ...]
    noise_sigma: float
    sax_offset: tuple[float, float]  # heart position in the SAX field of view (mm)
    lax_angles_deg: dict[str, float]  # angle of each LAX plane about the long axis, from e1
    lax_offsets_mm: dict[str, float]  # plane offset from the long axis along its normal
    breath_hold_shifts: tuple[tuple[float, float], ...] = field(default=())  # per SAX slice, mm

    def to_json(self) -> dict:
        d = asdict(self)
        d["intensity_scale"] = {TISSUE_NAMES[k]: v for k, v in self.intensity_scale.items()}
        return d


def sample_params(seed: int, cohort: Cohort = "healthy", num_frames: int = 25) -> SubjectParams:
    """Draw a random subject of `cohort` from `seed` (deterministic)."""
    if cohort not in ("healthy", "heart-failure"):
        raise ValueError(f"cohort must be 'healthy' or 'heart-failure', got {cohort!r}")
    if num_frames < 4:
        raise ValueError(f"num_frames must be at least 4, got {num_frames}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0 if cohort == "healthy" else 1]))
    u = rng.uniform
    if cohort == "healthy":
        r, length, wall, ef, descent = u(23, 27.5), u(74, 88), u(8, 11), u(0.55, 0.70), u(10, 15)
        rv_ef = u(0.50, 0.65)
    else:
        r, length, wall, ef, descent = u(31, 37), u(88, 100), u(5.5, 8), u(0.20, 0.40), u(4, 8)
        rv_ef = u(0.30, 0.50)
    # LV long axis: from base toward the apex, left (-x), anterior (+y), inferior (-z) in RAS.
    mean_axis = _unit([-0.55, 0.45, -0.70])
    axis = _unit(mean_axis + rng.normal(0, 0.22, 3))  # about +-15 degrees per component
    # Septal direction: toward the patient's right and posterior-ish, perpendicular to the axis.
    ref = np.array([1.0, -0.2, 0.2]) + rng.normal(0, 0.15, 3)
    e1 = _unit(ref - (ref @ axis) * axis)
    body_centre = np.array([0.0, 0.0, 0.0]) + rng.normal(0, 5, 3)
    base = body_centre + np.array([-15.0, 25.0, 30.0]) + rng.normal(0, 6, 3)
    es_frame = int(round(num_frames * u(0.32, 0.40)))
    papillary = tuple((float(ang), float(u(0.45, 0.7)), float(u(0.8, 1.2)))
                      for ang in (u(0.6, 1.0), -u(0.6, 1.0)))
    scale = {k: float(u(0.85, 1.15)) for k in BASE_INTENSITY}

    def waves(n: int, wavelength: tuple[float, float], amp: tuple[float, float]) -> tuple:
        out = []
        for _ in range(n):
            direction = _unit(rng.normal(size=3))
            k = 2 * np.pi / u(*wavelength)
            out.append((*(direction * k).tolist(), float(u(0, 2 * np.pi)), float(u(*amp))))
        return tuple(out)

    return SubjectParams(
        seed=seed, cohort=cohort, num_frames=num_frames, es_frame=es_frame,
        lv_radius_ed=float(r), lv_length_ed=float(length), wall_thickness=float(wall),
        apex_thickness=float(wall * u(0.6, 0.8)), lv_ef=float(ef), base_descent=float(descent),
        rv_offset=float(u(0.6, 0.75)), rv_width=float(u(1.55, 1.8)), rv_depth=float(u(1.4, 1.6)),
        rv_length=float(u(0.85, 0.95)), rv_ef=float(rv_ef),
        base_centre=tuple(base.tolist()), long_axis=tuple(axis.tolist()), septal_dir=tuple(e1.tolist()),
        body_centre=tuple(body_centre.tolist()), body_semi_axes=(float(u(150, 175)), float(u(100, 120))),
        fat_thickness=float(u(6, 16)), papillary=papillary, intensity_scale=scale,
        texture=waves(10, (8, 30), (0.015, 0.04)), bias=waves(3, (250, 500), (0.05, 0.12)),
        noise_sigma=float(u(0.015, 0.04)),
        sax_offset=(float(u(-12, 12)), float(u(-12, 12))),
        lax_angles_deg={"4ch": float(u(-8, 8)), "2ch": float(90 + u(-8, 8)), "3ch": float(140 + u(-6, 6))},
        lax_offsets_mm={v: float(u(-1.5, 1.5)) for v in ("2ch", "3ch", "4ch")},
    )


def contraction(num_frames: int, es_frame: int) -> np.ndarray:
    """Fraction of systolic contraction per frame: 0 at ED (frame 0), 1 at ES, rapid filling,
    diastasis and the atrial kick back to 0."""
    phase = np.arange(num_frames) / num_frames
    phi_es = es_frame / num_frames
    f = np.empty(num_frames)
    sys = phase <= phi_es
    f[sys] = 0.5 * (1 - np.cos(np.pi * phase[sys] / phi_es))
    g = (phase[~sys] - phi_es) / (1 - phi_es)
    rapid = 0.5 * (1 - np.cos(np.pi * np.clip(g / 0.35, 0, 1)))
    kick = np.clip((g - 0.7) / 0.3, 0, 1)
    kick = kick * kick * (3 - 2 * kick)
    f[~sys] = 1 - (0.8 * rapid + 0.2 * kick)
    return f


@dataclass(frozen=True)
class FrameShape:
    """LV/RV geometry of one frame (mm)."""

    d: float  # base descent
    r: float  # endocardial short semi-axis
    L: float  # endocardial long semi-axis
    R: float  # epicardial short semi-axis
    Le: float  # epicardial long semi-axis
    rv_scale: float


class Anatomy:
    """Tissue classes of one subject at world points, frame by frame."""

    def __init__(self, params: SubjectParams):
        self.p = params
        self.B = np.array(params.base_centre)
        self.a = np.array(params.long_axis)
        self.e1 = np.array(params.septal_dir)
        self.e2 = np.cross(self.a, self.e1)
        self.f = contraction(params.num_frames, params.es_frame)
        r0, L0, th = params.lv_radius_ed, params.lv_length_ed, params.wall_thickness
        self.edv_mm3 = 2 / 3 * np.pi * r0**2 * L0
        self.esv_mm3 = self.edv_mm3 * (1 - params.lv_ef)
        R0, Le0 = r0 + th, L0 + params.apex_thickness
        self.myo_mm3 = 2 / 3 * np.pi * (R0**2 * Le0 - r0**2 * L0)
        self.frames = []
        for t in range(params.num_frames):
            ft = float(self.f[t])
            d = params.base_descent * ft
            L = L0 - d
            V = self.edv_mm3 - (self.edv_mm3 - self.esv_mm3) * ft
            r = np.sqrt(3 * V / (2 * np.pi * L))
            # Apex thickens in proportion to the lateral wall; solve for R with Vm constant.
            t_apex = params.apex_thickness * (1 + 0.4 * ft)
            Le = L + t_apex
            R = np.sqrt((3 * self.myo_mm3 / (2 * np.pi) + r**2 * L) / Le)
            self.frames.append(FrameShape(d, float(r), float(L), float(R), float(Le), 1.0))
        self._calibrate_rv()
        # Bounding cylinder of every heart structure (for speed: the rest is background).
        self.heart_extent = (-60.0, L0 + 1.4 * params.apex_thickness + 8.0)
        self.heart_radius = 2.2 * r0 + 15.0

    def _set_rv_scale(self, k_es: float) -> None:
        """RV axes scale by 1 at ED down to k_es at ES, following the contraction curve."""
        self.frames = [FrameShape(fs.d, fs.r, fs.L, fs.R, fs.Le, float(1 - (1 - k_es) * ft))
                       for fs, ft in zip(self.frames, self.f)]

    def _calibrate_rv(self) -> None:
        """Find the ES scale of the RV axes that gives the subject's RV EF (bisection): the RV
        cavity is an ellipsoid minus the moving LV, so its volume is not a simple power law."""
        target = 1 - self.p.rv_ef
        t_es = self.p.es_frame
        ed = self.rv_volume_ml(0, step_mm=1.25)
        lo, hi = 0.4, 1.0
        for _ in range(10):
            mid = 0.5 * (lo + hi)
            self._set_rv_scale(mid)
            if self.rv_volume_ml(t_es, step_mm=1.25) / ed > target:
                hi = mid
            else:
                lo = mid
        self._set_rv_scale(0.5 * (lo + hi))

    # ----- heart-frame coordinates -----
    def local(self, xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rel = xyz - self.B.astype(np.float32)
        return rel @ self.a.astype(np.float32), rel @ self.e1.astype(np.float32), rel @ self.e2.astype(np.float32)

    def _background(self, xyz: np.ndarray) -> np.ndarray:
        p = self.p
        c = np.array(p.body_centre, dtype=np.float32)
        x, y, z = (xyz - c).T
        ax, ay = p.body_semi_axes
        tissue = np.zeros(len(xyz), dtype=np.uint8)
        body = (x / ax) ** 2 + (y / ay) ** 2
        tissue[body < 1] = FAT
        fa, fb = ax - p.fat_thickness, ay - p.fat_thickness
        inner = (x / fa) ** 2 + (y / fb) ** 2
        tissue[inner < 1] = MUSCLE
        ma, mb = fa - 12, fb - 12
        tissue[(x / ma) ** 2 + (y / mb) ** 2 < 1] = SOFT
        # Lungs: left (-x) smaller where the heart sits; right (+x) larger.
        for cx, sx in ((-70.0, 50.0), (75.0, 58.0)):
            lung = ((x - cx) / sx) ** 2 + ((y + 10) / (mb * 0.8)) ** 2 + ((z - 40) / 140) ** 2
            tissue[(lung < 1) & (inner < 1)] = LUNG
        # Liver below the diaphragm, on the patient's right (+x), under the right lung.
        liver = ((x - 45) / 110) ** 2 + ((y + 5) / (mb * 0.9)) ** 2 + ((z + 75) / 70) ** 2
        tissue[(liver < 1) & (z < -20) & (inner < 1)] = LIVER
        # Spine (posterior midline) and descending aorta beside it.
        tissue[((x / 18) ** 2 + ((y + mb - 25) / 16) ** 2 < 1)] = SPINE
        tissue[(((x + 22) / 11) ** 2 + ((y + mb - 45) / 11) ** 2 < 1) & (inner < 1)] = DESC_AORTA
        return tissue

    def _ellipsoid(self, s, p_, q, centre, semi) -> np.ndarray:
        return ((s - centre[0]) / semi[0]) ** 2 + ((p_ - centre[1]) / semi[1]) ** 2 + ((q - centre[2]) / semi[2]) ** 2

    def heart_static(self, xyz: np.ndarray) -> dict[str, np.ndarray]:
        """What `_heart` needs at points `xyz` that does not change over frames (heart-frame coordinates,
        the pericardial fat pattern, the atria and great vessels' lumen and wall masks): computed once per
        point set and reused for every frame."""
        r0, wall = self.p.lv_radius_ed, VESSEL_WALL_MM
        s, pp, qq = self.local(xyz)
        # Left and right atrium: ellipsoids (centre, semi-axes) in the ED heart frame.
        atria = (((-24.0, -0.35 * r0, -0.1 * r0), (24.0, 0.95 * r0, 1.05 * r0)),
                 ((-22.0, 1.35 * r0, 0.15 * r0), (22.0, 0.8 * r0, 0.95 * r0)))
        lumen = [self._ellipsoid(s, pp, qq, c, semi) < 1 for c, semi in atria]
        walled = [self._ellipsoid(s, pp, qq, c, tuple(v + wall for v in semi)) < 1 for c, semi in atria]
        # Aorta and pulmonary artery: tubes along the long axis (centre in the short-axis plane, radius).
        ao_dir = (np.cos(np.radians(-45)), np.sin(np.radians(-45)))
        tubes = {"aorta": ((0.45 * r0 * ao_dir[0], 0.45 * r0 * ao_dir[1]), 12.0), "pa": ((1.1 * r0, -0.9 * r0), 12.5)}
        out = {"s": s, "pp": pp, "qq": qq, "rho2": pp * pp + qq * qq,
               "patch": self._waves(xyz, self.p.texture[:3]) > 0.0,
               "atria": lumen[0] | lumen[1], "atria_wall": walled[0] | walled[1]}
        for name, (c, radius) in tubes.items():
            d = ((pp - c[0]) ** 2 + (qq - c[1]) ** 2) / radius**2
            out[name], out[name + "_wall"] = d < 1, d < (1 + wall / radius) ** 2
        return out

    def _heart(self, xyz: np.ndarray, t: int, tissue: np.ndarray, static: dict[str, np.ndarray] | None = None) -> None:
        """Write heart tissues of frame t into `tissue` (in place) for points `xyz` (`static`: from
        `heart_static(xyz)`, to reuse across frames)."""
        p, fs = self.p, self.frames[t]
        st = self.heart_static(xyz) if static is None else static
        s, pp, qq, rho2 = st["s"], st["pp"], st["qq"], st["rho2"]
        below_base = s >= fs.d
        sl = s - fs.d
        endo = (sl / fs.L) ** 2 + rho2 / fs.r**2
        epi = (sl / fs.Le) ** 2 + rho2 / fs.R**2
        r0 = p.lv_radius_ed
        # Pericardial fat: patchy layer up to 3.5 mm outside the epicardium.
        peri = (sl / (fs.Le + 3.5)) ** 2 + rho2 / (fs.R + 3.5) ** 2
        tissue[(peri < 1) & below_base & st["patch"]] = PERI_FAT
        # Atria and great vessels above the base plane (static in the ED heart frame).
        above = s < fs.d
        aorta_span = (s > -55) & (s < fs.d + 4)
        pa_span = (s > -50) & (s < fs.d - 2)
        tissue[st["atria_wall"] & above] = VESSEL_WALL
        tissue[st["aorta_wall"] & aorta_span] = VESSEL_WALL
        tissue[st["pa_wall"] & pa_span] = VESSEL_WALL
        tissue[st["atria"] & above] = VESSEL_BLOOD
        tissue[(st["aorta"] & aorta_span) | (st["pa"] & pa_span)] = VESSEL_BLOOD
        # RV: an ellipsoid offset toward e1, minus the LV, with a 3 mm free wall.
        k = fs.rv_scale
        rv_c = (0.30 * p.lv_length_ed, p.rv_offset * r0, 0.0)
        rv_semi = (p.rv_length * p.lv_length_ed * 0.62 * k, p.rv_depth * r0 * k, p.rv_width * r0 * k)
        rv_base = s >= fs.d + 1.0
        rv = self._ellipsoid(s, pp, qq, rv_c, rv_semi)
        rv_outer = self._ellipsoid(s, pp, qq, rv_c, tuple(v + 3.0 for v in rv_semi))
        tissue[(rv_outer < 1) & rv_base & (s > rv_c[0] - rv_semi[0] - 3)] = RV_WALL
        tissue[(rv < 1) & rv_base] = RV_BLOOD
        # LV myocardium, cavity, papillary muscles (which count as cavity in the labels).
        tissue[(epi < 1) & below_base] = LV_MYO
        tissue[(endo < 1) & below_base] = LV_BLOOD
        eta = sl / fs.L
        for angle, depth, size in p.papillary:
            # Normalised coordinates move the muscles with the wall; -e1 is the free wall.
            cp, cq = -0.62 * np.cos(angle), 0.62 * np.sin(angle)
            pap = ((eta - depth) / (0.22 * size)) ** 2 + ((pp / fs.r - cp) / (0.17 * size)) ** 2 \
                + ((qq / fs.r - cq) / (0.17 * size)) ** 2
            tissue[(pap < 1) & (endo < 1) & below_base] = PAPILLARY

    @staticmethod
    def _waves(xyz: np.ndarray, waves) -> np.ndarray:
        out = np.zeros(len(xyz), dtype=np.float32)
        for kx, ky, kz, phase, amp in waves:
            out += np.float32(amp) * np.sin(xyz @ np.array([kx, ky, kz], dtype=np.float32) + np.float32(phase))
        return out

    # ----- public -----
    def background(self, xyz: np.ndarray) -> np.ndarray:
        """Static tissues at points (N, 3) (world mm, float32)."""
        return self._background(np.asarray(xyz, dtype=np.float32))

    def heart_mask(self, xyz: np.ndarray) -> np.ndarray:
        """Points that may hold heart structures (inside a bounding cylinder about the LV axis)."""
        s, pp, qq = self.local(np.asarray(xyz, dtype=np.float32))
        lo, hi = self.heart_extent
        return (s > lo) & (s < hi) & (pp * pp + qq * qq < self.heart_radius**2)

    def tissue(self, xyz: np.ndarray, t: int, background: np.ndarray | None = None,
               heart: np.ndarray | None = None, static: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """Tissue classes (N,) uint8 at points (N, 3) in frame t; `background`, `heart` and `static`
        (from `background()`, `heart_mask()` and `heart_static()` of the heart points) may be passed to
        reuse them across frames."""
        xyz = np.asarray(xyz, dtype=np.float32)
        out = self.background(xyz) if background is None else background.copy()
        idx = np.flatnonzero(self.heart_mask(xyz) if heart is None else heart)
        if idx.size:
            sub = out[idx]
            self._heart(xyz[idx], t, sub, static)
            out[idx] = sub
        return out

    def modulation(self, xyz: np.ndarray) -> np.ndarray:
        """Multiplicative texture times coil bias field at points (N,), static in the world."""
        xyz = np.asarray(xyz, dtype=np.float32)
        return (1 + self._waves(xyz, self.p.texture)) * (1 + self._waves(xyz, self.p.bias))

    def intensity_table(self) -> np.ndarray:
        table = np.zeros(NUM_TISSUES, dtype=np.float32)
        for k, v in BASE_INTENSITY.items():
            table[k] = v * self.p.intensity_scale[k]
        table[AIR] = 0.0
        return table

    def lv_volumes_ml(self) -> tuple[float, float]:
        """Analytic LV cavity volumes (EDV, ESV) in mL."""
        return self.edv_mm3 / 1000.0, self.esv_mm3 / 1000.0

    def rv_volume_ml(self, t: int, step_mm: float = 0.7) -> float:
        """RV cavity volume (mL) of frame t, counted on a fine grid in the heart frame."""
        p = self.p
        r0, L0 = p.lv_radius_ed, p.lv_length_ed
        ext_s = (-5.0, 0.30 * L0 + p.rv_length * L0 * 0.62 + 2)
        ext_p = (-(r0 + 5), p.rv_offset * r0 + p.rv_depth * r0 + 2)
        ext_q = (-(p.rv_width * r0 + 2), p.rv_width * r0 + 2)
        s = np.arange(*ext_s, step_mm)
        total = 0
        pg, qg = np.meshgrid(np.arange(*ext_p, step_mm), np.arange(*ext_q, step_mm), indexing="ij")
        for sv in s:
            pts = (self.B + sv * self.a)[None, :] + pg.reshape(-1, 1) * self.e1 + qg.reshape(-1, 1) * self.e2
            tis = np.zeros(len(pts), dtype=np.uint8)
            self._heart(pts.astype(np.float32), t, tis)
            total += int(np.count_nonzero(tis == RV_BLOOD))
        return total * step_mm**3 / 1000.0
