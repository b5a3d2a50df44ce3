"""SynthSeg-style training images for the SAX segmenter (Billot et al., 2023).

The phantom gives tissue maps (16 tissue classes, heart and background) on any plane. From a
tissue map this module makes a training image whose every appearance parameter is random, and
its label map (0 background, 1 LV cavity, 2 LV myocardium, 3 RV cavity):

1. geometry: a slab of thin tissue slices (2 mm apart) around a random SAX position of a random
   phantom subject and frame, planes tilted up to 10 degrees from the true short axis;
   a random rotation (any angle), zoom, small translation and elastic deformation (MONAI
   `Rand2DElastic`, nearest neighbour), applied to the tissue ids of every thin slice at once,
   so the label map is warped with the image it will be made from;
2. background structure: every non-heart tissue is split by a random smooth field into up to three
   sub-classes with their own intensity, so the network cannot rely on a fixed body model;
3. appearance: per class, a mean intensity from a mixture (uniform on [0, 1], or bSSFP-like:
   blood bright, myocardium dark, each jittered) and a within-class standard deviation; blur,
   averaging over a random slice thickness (2 to 10 mm), a random bias field, in-plane
   resolution loss, Rician noise and gamma (MONAI transforms), then the percentile map to
   [-1, 1] used at inference.

No flip anywhere: a mirror image puts the RV on the wrong side of the septum. Slices are
rendered with the in-plane axes (u, v) and the apex-ward normal n = u x v right-handed, the
canonical orientation `cardiorecon.segment.canonical_inplane` gives real scans.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cardiorecon.phantom.acquire import StackRenderer, grid_points
from cardiorecon.phantom.anatomy import (BASE_INTENSITY, DESC_AORTA, LV_BLOOD, LV_MYO, NUM_TISSUES, PAPILLARY,
                                         RV_BLOOD, RV_WALL, TISSUE_TO_LABEL, VESSEL_BLOOD, VESSEL_WALL, Anatomy,
                                         sample_params)

#: tissues that keep one intensity per image (the heart); the others get random sub-classes
HEART_TISSUES = (VESSEL_WALL, VESSEL_BLOOD, RV_WALL, RV_BLOOD, LV_MYO, LV_BLOOD, PAPILLARY)
BLOOD_TISSUES = (DESC_AORTA, VESSEL_BLOOD, RV_BLOOD, LV_BLOOD)
MUSCLE_TISSUES = (VESSEL_WALL, RV_WALL, LV_MYO, PAPILLARY)
MAX_SUBCLASSES = 3


@dataclass(frozen=True)
class SynthConfig:
    """Parameters of the tissue stacks and of the random appearance (mm, fractions)."""

    spacing_mm: float = 1.5  # in-plane pixel of the stacks and of the model grid
    matrix: int = 160  # stack field of view: 240 mm
    thin_step_mm: float = 2.0
    patch_size: int = 96
    max_tilt_deg: float = 10.0
    max_thin_slices: int = 5  # slice thickness up to 5 x 2 mm
    zoom_range: tuple[float, float] = (0.8, 1.25)
    heart_centred: float = 0.8  # share of patches centred near the heart (the rest anywhere)
    random_contrast: float = 0.4  # share of images with uniform random class intensities
    max_class_std: float = 0.08
    bias_coeff: float = 0.5
    min_resolution_zoom: float = 0.45  # in-plane resolution down to 1.5 / 0.45 = 3.3 mm
    max_noise_std: float = 0.06
    gamma_range: tuple[float, float] = (0.6, 1.6)


# ----------------------------------------------------------------------------------- tissue stacks
def _axes(normal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ref = np.array([0.0, 0.0, 1.0]) if abs(normal[2]) < 0.9 else np.array([0.0, 1.0, 0.0])
    u = np.cross(normal, ref)
    u /= np.linalg.norm(u)
    return u, np.cross(normal, u)  # (u, v, n) right-handed: u x v = n


def render_tissue_stack(seed: int, cohort: str, cfg: SynthConfig = SynthConfig(), num_frames: int = 3,
                        rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Tissue ids (F, S, H, W) uint8 of a phantom subject on thin, slightly tilted SAX planes from
    30 mm above the base to 20 mm below the apex, at ED, ES and mid-diastole (F <= 3), and
    the frames used."""
    rng = rng or np.random.default_rng(seed + (0 if cohort == "healthy" else 100_000))
    params = sample_params(seed, cohort, 25)  # type: ignore[arg-type]
    anatomy = Anatomy(params)
    a = np.asarray(anatomy.a)
    u0, v0 = _axes(a)
    tilt = math.radians(rng.uniform(0, cfg.max_tilt_deg))
    phi = rng.uniform(0, 2 * math.pi)
    n = a * math.cos(tilt) + (u0 * math.cos(phi) + v0 * math.sin(phi)) * math.sin(tilt)
    u, v = _axes(n)
    first = -30.0
    last = params.lv_length_ed + params.apex_thickness * 1.4 + 20.0
    S = int((last - first) / cfg.thin_step_mm) + 1
    centre = anatomy.B + first * a + rng.uniform(-15, 15, 2) @ np.stack([u, v])
    affine = np.eye(4)
    affine[:3, 0], affine[:3, 1], affine[:3, 2] = u * cfg.spacing_mm, v * cfg.spacing_mm, n * cfg.thin_step_mm
    affine[:3, 3] = centre - (cfg.matrix - 1) / 2 * (affine[:3, 0] + affine[:3, 1])
    M = cfg.matrix
    renderer = StackRenderer(anatomy, grid_points(affine, (M, M, S), np.zeros(1)))
    frames = sorted({0, params.es_frame, (params.es_frame + 25) // 2})[:num_frames]
    out = np.zeros((len(frames), S, M, M), np.uint8)
    for i, t in enumerate(frames):
        tissue = anatomy.tissue(renderer.points, t, renderer.background, renderer.heart, renderer.static)
        out[i] = tissue.reshape(S, 1, M, M)[:, 0]
    return out, np.array(frames)


def write_tissue_bank(folder: str | Path, seeds: list[int], cohort: str, cfg: SynthConfig = SynthConfig(),
                      progress: bool = True) -> list[Path]:
    """Render and save (npz) the tissue stacks of phantom subjects `seeds` of `cohort`."""
    import time

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    prefix = "hf" if cohort == "heart-failure" else "healthy"
    for seed in seeds:
        path = folder / f"{prefix}_{seed:04d}.npz"
        if not path.is_file():
            t0 = time.perf_counter()
            tissue, frames = render_tissue_stack(seed, cohort, cfg)
            tmp = path.with_suffix(".tmp.npz")
            np.savez_compressed(tmp, tissue=tissue, frames=frames)
            tmp.rename(path)
            if progress:
                print(f"  tissue stack {path.name}: {tissue.shape} ({time.perf_counter() - t0:.1f} s)", flush=True)
        paths.append(path)
    return paths


def load_tissue_bank(folder: str | Path) -> list[np.ndarray]:
    """Every tissue stack (F, S, H, W) saved under `folder`."""
    paths = sorted(Path(folder).glob("*.npz"))
    if not paths:
        raise FileNotFoundError(f"no tissue stacks (*.npz) under {folder}")
    return [np.load(p)["tissue"] for p in paths if not p.name.endswith(".tmp.npz")]


# ----------------------------------------------------------------------------------- synthesis
def _smooth_field(shape: tuple[int, int], g: torch.Generator, cells: int) -> torch.Tensor:
    """Smooth random field (H, W), about N(0, 1), varying over `cells` cells per side."""
    coarse = torch.randn(1, 1, cells, cells, generator=g)
    return F.interpolate(coarse, size=shape, mode="bicubic", align_corners=False)[0, 0]


def _uniform(g: torch.Generator, lo: float, hi: float, size: tuple[int, ...] = ()) -> torch.Tensor:
    return torch.rand(size, generator=g) * (hi - lo) + lo


def class_intensities(g: torch.Generator, cfg: SynthConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std (NUM_TISSUES * MAX_SUBCLASSES,) of every (tissue, sub-class) in [0, 1]."""
    K = NUM_TISSUES * MAX_SUBCLASSES
    if torch.rand((), generator=g) < cfg.random_contrast:
        mean = torch.rand(K, generator=g)
    else:  # bSSFP-like: blood pools share a bright level, muscle a dark one, each jittered
        base = torch.tensor([BASE_INTENSITY[k] for k in range(NUM_TISSUES)], dtype=torch.float32)
        base = base * _uniform(g, 0.6, 1.4, (NUM_TISSUES,))
        blood, muscle = _uniform(g, 0.6, 1.0), _uniform(g, 0.1, 0.45)
        base[list(BLOOD_TISSUES)] = blood * _uniform(g, 0.9, 1.08, (len(BLOOD_TISSUES),))
        base[list(MUSCLE_TISSUES)] = muscle * _uniform(g, 0.85, 1.15, (len(MUSCLE_TISSUES),))
        mean = base.repeat(MAX_SUBCLASSES) + torch.randn(K, generator=g) * 0.12
        mean[:NUM_TISSUES] = base  # sub-class 0 keeps the tissue's level
    std = torch.rand(K, generator=g) * cfg.max_class_std
    return mean.clamp(0, 1.2), std


class Synthesizer:
    """Makes (image (1, P, P) in [-1, 1], labels (P, P)) pairs from tissue stacks.

    Every random choice comes from the torch generator passed to `sample`; MONAI's transforms are
    re-seeded from it, so a batch is a pure function of (stacks, generator state).
    """

    def __init__(self, stacks: list[np.ndarray], cfg: SynthConfig = SynthConfig()):
        from monai.transforms import (Rand2DElastic, RandAdjustContrast, RandBiasField, RandRicianNoise,
                                      RandSimulateLowResolution)

        self.stacks, self.cfg = stacks, cfg
        P = cfg.patch_size
        self.spatial = Rand2DElastic(spacing=(24, 24), magnitude_range=(0.0, 2.0), prob=1.0,
                                     rotate_range=(math.pi,), scale_range=(0.0, 0.0),
                                     translate_range=(6, 6), spatial_size=(P, P), mode="nearest",
                                     padding_mode="zeros")
        self.bias = RandBiasField(degree=3, coeff_range=(0.0, cfg.bias_coeff), prob=0.8)
        self.lowres = RandSimulateLowResolution(prob=0.6, downsample_mode="area", upsample_mode="bilinear",
                                                zoom_range=(cfg.min_resolution_zoom, 1.0))
        self.noise = RandRicianNoise(prob=0.9, std=cfg.max_noise_std, sample_std=True)
        self.gamma = RandAdjustContrast(prob=0.8, gamma=cfg.gamma_range)
        # where each stack's slices hold any heart label, and the LV centre per slice
        self.heart_slices, self.centres = [], []
        for st in stacks:
            lab = TISSUE_TO_LABEL[st[0]]  # ED: (S, H, W)
            has = np.flatnonzero((lab == 1).any(axis=(1, 2)))
            self.heart_slices.append(has)
            cen = np.full((st.shape[1], 2), st.shape[2] / 2)
            for s in has:
                cen[s] = np.argwhere(lab[s] > 0).mean(0)
            self.centres.append(cen)

    def _reseed(self, g: torch.Generator) -> None:
        for t in (self.spatial, self.bias, self.lowres, self.noise, self.gamma):
            t.set_random_state(seed=int(torch.randint(2**31 - 1, (), generator=g)))

    def _slab(self, g: torch.Generator) -> tuple[np.ndarray, int]:
        """Thin tissue slices (n, C, C) around the patch centre, and which of them is the centre."""
        cfg = self.cfg
        i = int(torch.randint(len(self.stacks), (), generator=g))
        st = self.stacks[i]
        f = int(torch.randint(st.shape[0], (), generator=g))
        heart = self.heart_slices[i]
        if torch.rand((), generator=g) < 0.85 and len(heart):
            lo, hi = max(0, heart[0] - 3), min(st.shape[1], heart[-1] + 4)
            s = int(torch.randint(lo, hi, (), generator=g))
        else:
            s = int(torch.randint(st.shape[1], (), generator=g))
        n = int(torch.randint(1, cfg.max_thin_slices + 1, (), generator=g))
        zs = np.clip(np.arange(n) - (n - 1) // 2 + s, 0, st.shape[1] - 1)
        C = int(round(cfg.patch_size * 1.6))
        zoom = float(_uniform(g, *cfg.zoom_range))
        Cz = int(round(C * zoom))  # source crop of Cz pixels resized to C: zoom > 1 shows more field
        if torch.rand((), generator=g) < cfg.heart_centred:
            centre = self.centres[i][min(max(s, heart[0]), heart[-1])] if len(heart) else np.array(st.shape[2:]) / 2
            centre = centre + _uniform(g, -25, 25, (2,)).numpy() / cfg.spacing_mm
        else:
            centre = _uniform(g, 0, st.shape[2], (2,)).numpy()
        lo = np.round(centre - Cz / 2).astype(int)
        slab = np.zeros((len(zs), Cz, Cz), np.uint8)  # outside the stack: air
        src = st[f, zs]
        a0, b0 = np.maximum(lo, 0), np.minimum(lo + Cz, st.shape[2:])
        if (b0 > a0).all():
            slab[:, a0[0] - lo[0]:b0[0] - lo[0], a0[1] - lo[1]:b0[1] - lo[1]] = src[:, a0[0]:b0[0], a0[1]:b0[1]]
        if Cz != C:
            t = F.interpolate(torch.from_numpy(slab)[None].float(), size=(C, C), mode="nearest")[0]
            slab = t.numpy().astype(np.uint8)
        return slab, (n - 1) // 2

    def geometry(self, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Warped thin tissue slices (n, P, P) long and the label map (P, P) of the centre one."""
        slab, centre = self._slab(g)
        warped = self.spatial(torch.from_numpy(slab).float()).round().long()  # (n, P, P), nearest
        warped = torch.as_tensor(warped).clamp(0, NUM_TISSUES - 1)
        labels = torch.from_numpy(TISSUE_TO_LABEL)[warped[centre]].long()
        return warped, labels

    def appearance(self, tissue: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """Image (1, P, P) in [-1, 1] from thin tissue slices (n, P, P)."""
        cfg = self.cfg
        P = tissue.shape[-1]
        # background sub-classes from a smooth random field (same on every thin slice)
        field = _smooth_field((P, P), g, int(torch.randint(3, 9, (), generator=g)))
        cuts = torch.sort(torch.randn(MAX_SUBCLASSES - 1, generator=g)).values
        sub = torch.bucketize(field, cuts)  # 0 .. MAX_SUBCLASSES-1
        heart = torch.zeros(NUM_TISSUES, dtype=torch.bool)
        heart[list(HEART_TISSUES)] = True
        cls = tissue + NUM_TISSUES * torch.where(heart[tissue], torch.zeros_like(sub), sub)
        mean, std = class_intensities(g, cfg)
        img = mean[cls] + std[cls] * torch.randn(cls.shape, generator=g)
        blur = float(_uniform(g, 0.0, 1.0))
        if blur > 0.1:
            img = _gaussian_blur(img[:, None], blur)[:, 0]
        img = img.mean(0, keepdim=True)  # slice profile: a box over the thin slices
        self._reseed(g)
        img = self.bias(img.clamp_min(0))
        img = self.lowres(torch.as_tensor(img))
        img = torch.as_tensor(self.noise(torch.as_tensor(img).float())).abs()
        img = torch.as_tensor(self.gamma(torch.as_tensor(img).clamp_min(0) / max(float(img.max()), 1e-6)))
        return normalise_patch(img.float(), g)

    def sample(self, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        tissue, labels = self.geometry(g)
        return self.appearance(tissue, g), labels

    def batch(self, n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (n, 1, P, P) and labels (n, P, P)."""
        pairs = [self.sample(g) for _ in range(n)]
        return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur (sigma in pixels) of (B, 1, H, W)."""
    r = max(1, int(math.ceil(2.5 * sigma)))
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=torch.float32) / sigma) ** 2)
    k = k / k.sum()
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1))


def normalise_patch(img: torch.Tensor, g: torch.Generator, jitter: float = 0.1) -> torch.Tensor:
    """Percentile (1, 99) map to [-1, 1], as at inference, with a small random error of the
    percentiles (inference takes them over the whole field of view, not the patch)."""
    lo, hi = torch.quantile(img.flatten(), torch.tensor([0.01, 0.99])).tolist()
    span = max(hi - lo, 1e-6)
    lo += float(_uniform(g, -jitter, jitter)) * span
    hi += float(_uniform(g, -jitter, jitter)) * span
    hi = max(hi, lo + 1e-6)
    return ((img - (hi + lo) / 2) / ((hi - lo) / 2)).clamp(-1, 1)


# ----------------------------------------------------------------------------------- real slices
@dataclass
class RealSlices:
    """Contoured real slices on the canonical whole-field grid (`cardiorecon.segment.to_canonical`),
    intensities in [0, 1] (the [-1, 1] map of the whole stack, shifted), with the classes each
    slice delineates (label 0 elsewhere means 'not one of them')."""

    images: list[np.ndarray]  # (H, W) float32, sizes differ between scans
    labels: list[np.ndarray]  # (H, W) uint8
    known: np.ndarray  # (N, C) bool
    source: list[str]
    weight: np.ndarray  # (N,) sampling weight (each scan's slices share its weight)


def real_slices(studies: list[tuple[str, object]], spacing_mm: float, num_classes: int = 4,
                weights: list[float] | None = None) -> RealSlices:
    """Collect the contoured slices of `studies` [(name, Study with sax_labels and
    meta['annotated'])]; `weights`: each study's share of the draws (default equal)."""
    from cardiorecon.segment import normalise_images, to_canonical

    images, labels, known, source, weight = [], [], [], [], []
    weights = weights or [1.0] * len(studies)
    for (name, study), w in zip(studies, weights):
        norm = normalise_images(study.sax.data)
        picks = study.meta["annotated"]
        for a in picks:
            z, t = a["slice"], a["frame"]
            img = to_canonical(norm[None, :, :, z, t], study.sax.affine, spacing_mm)[0, 0].numpy()
            lab = to_canonical(study.sax_labels.data[None, :, :, z, t], study.sax.affine, spacing_mm,
                               labels=True)[0, 0].numpy().astype(np.uint8)
            images.append((img + 1) / 2)
            labels.append(lab)
            k = np.zeros(num_classes, bool)
            k[list(a["classes"])] = True
            known.append(k)
            source.append(name)
            weight.append(w / len(picks))
    wt = np.asarray(weight)
    return RealSlices(images, labels, np.stack(known), source, wt / wt.sum())


class RealAugmenter:
    """Random crops of real contoured slices with the same geometry and intensity randomisation
    as the synthetic images (no flip); labels warped with the image (nearest)."""

    def __init__(self, bank: RealSlices, synth: Synthesizer, zoom_range: tuple[float, float] | None = None):
        from monai.transforms import Rand2DElasticd

        self.bank, self.synth, cfg = bank, synth, synth.cfg
        self.zoom_range = cfg.zoom_range if zoom_range is None else zoom_range
        P = cfg.patch_size
        self.spatial = Rand2DElasticd(keys=("image", "label"), spacing=(24, 24), magnitude_range=(0.0, 2.0),
                                      prob=1.0, rotate_range=(math.pi,), translate_range=(6, 6),
                                      spatial_size=(P, P), mode=("bilinear", "nearest"), padding_mode="zeros")
        self.centres = [np.argwhere(lab > 0).mean(0) if (lab > 0).any() else np.array(lab.shape) / 2
                        for lab in bank.labels]

    def sample(self, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        cfg = self.synth.cfg
        i = int(torch.multinomial(torch.from_numpy(self.bank.weight), 1, generator=g))
        img, lab = self.bank.images[i], self.bank.labels[i]
        C = int(round(cfg.patch_size * 1.6))
        zoom = float(_uniform(g, *self.zoom_range))
        Cz = int(round(C * zoom))
        centre = self.centres[i] + _uniform(g, -25, 25, (2,)).numpy() / cfg.spacing_mm
        lo = np.round(centre - Cz / 2).astype(int)
        crop_i = np.zeros((Cz, Cz), np.float32)
        crop_l = np.zeros((Cz, Cz), np.uint8)
        a0, b0 = np.maximum(lo, 0), np.minimum(lo + Cz, img.shape)
        if (b0 > a0).all():
            crop_i[a0[0] - lo[0]:b0[0] - lo[0], a0[1] - lo[1]:b0[1] - lo[1]] = img[a0[0]:b0[0], a0[1]:b0[1]]
            crop_l[a0[0] - lo[0]:b0[0] - lo[0], a0[1] - lo[1]:b0[1] - lo[1]] = lab[a0[0]:b0[0], a0[1]:b0[1]]
        ti = F.interpolate(torch.from_numpy(crop_i)[None, None], size=(C, C), mode="bilinear",
                           align_corners=False, antialias=Cz > C)[0]
        tl = F.interpolate(torch.from_numpy(crop_l)[None, None].float(), size=(C, C), mode="nearest")[0]
        self.spatial.set_random_state(seed=int(torch.randint(2**31 - 1, (), generator=g)))
        d = self.spatial({"image": ti, "label": tl})
        x = torch.as_tensor(d["image"]).float()
        s = self.synth
        s._reseed(g)
        x = s.bias(x.clamp_min(0))
        x = s.lowres(torch.as_tensor(x))
        x = torch.as_tensor(s.noise(torch.as_tensor(x).float())).abs()
        x = torch.as_tensor(s.gamma(torch.as_tensor(x).clamp_min(0) / max(float(x.max()), 1e-6)))
        y = torch.as_tensor(d["label"])[0].round().long()
        return normalise_patch(x.float(), g), y, torch.from_numpy(self.bank.known[i])


# ----------------------------------------------------------------------------------- diffusion training
def diffusion_synth_config(spacing_mm: float, size: int) -> SynthConfig:
    """The segmentation recipe at a diffusion model's grid: `size` px at `spacing_mm`, every patch
    centred near the heart (the model grid is a crop around the heart), the same 240 mm stacks."""
    return SynthConfig(spacing_mm=spacing_mm, matrix=int(round(240 / spacing_mm)), patch_size=size,
                       heart_centred=1.0)


def synthetic_bank(stacks: list[np.ndarray], n: int, cfg: SynthConfig, seed: int = 0) -> np.ndarray:
    """`n` appearance-randomised images (n, P, P) float16 in [-1, 1] made from the tissue stacks by
    `Synthesizer` (random geometry, class intensities, blur, slice profile, bias, resolution loss,
    noise, gamma; no flip): a slice bank the DiffAE trainer takes like a real one (saved as .npy,
    given as a --data path)."""
    synth = Synthesizer(stacks, cfg)
    g = torch.Generator().manual_seed(seed)
    out = np.zeros((n, cfg.patch_size, cfg.patch_size), np.float16)
    for i in range(n):
        synth._reseed(g)  # the geometry too draws from `g` (MONAI's own state is otherwise unseeded at first)
        out[i] = synth.sample(g)[0][0].numpy()
    return out
