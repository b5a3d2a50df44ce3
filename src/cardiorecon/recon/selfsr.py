"""Self-supervised through-plane super-resolution from the subject's own images (the `selfsr` method,
issue 26; SMORE-style: Zhao et al., 2020, with the LAX views as extra training pairs).

A SAX stack is sharp in-plane (the working grid's pixel p, 2 mm) and coarse through the stack (slices
of thickness T every S mm). The subject's own high-resolution directions show what a coarse sampling
loses, so a small network can learn to restore it with no training set:

1. Training pairs (`inplane_pairs`, `lax_pairs`). A high-resolution 2D image is degraded along its
   axis 0 exactly as the stack samples the heart along its normal (`degrade`): a box average of width
   T (the slab of an acquired slice), evaluated at rows o + k S ("acquired"), with targets at the
   output slice step S / f, o + j S / f (slab averages too: a dropped or new slice is a slab like
   the acquired ones). The "acquired" rows are then interpolated by the base method (`base_estimate`:
   `linear`, or `register` run on the same kind of data as at inference) and the network learns
   target - base on the rows in between.
   - in-plane: the SAX stack itself, degraded along x (then along y); with `register` the slices the
     demons registration aligns are the (y, z) planes at the degraded x positions, as at inference it
     aligns the (x, y) planes at the acquired z positions;
   - LAX: each guiding view resampled on a plane grid whose axis 0 is the SAX normal projected onto
     the view (`lax_plane`), so the degraded direction is the one the stack samples coarsely.
2. Network (`SRNet`): a small 2D CNN on planes (dense slice axis, in-plane axis), input the base
   estimate and the mask of acquired rows, output base + residual (last layer zero at the start).
3. Inference (`SelfSR.reconstruct`): the base estimate of the real stack, its (z, y) planes at every x
   and its (z, x) planes at every y through the network, the two orientations averaged; the acquired
   slices are copied back unchanged.

One network is trained per call on the requested frames together (`per_frame=False`) or one per frame.
Pre-training (`init`, issue 26): the network can start from weights pre-trained on many subjects' own
pairs (`training.selfsr.pretrain`, `benchmarks/pretrain_selfsr.py`; safetensors + JSON, `SRNetConfig`)
and is then fine-tuned `steps` steps on the subject (`steps=0`: the pre-trained network alone).
Geometry comes from the working grid (pixel p, slice step S) and the study (slice thickness T).

The method (`SelfSRMethod`, registered as `selfsr`; options `SelfSRConfig`): `cardiorecon reconstruct
--method selfsr [--option steps=100 --option base=linear ...]`, `evaluate --methods ...,selfsr`, `cohort
--method selfsr`; in code `ReconConfig(method_options={"selfsr": SelfSRConfig(...)})`. It trains when it
reaches the first frame (with `per_frame`, each frame), so the training seconds and memory count in that
frame's seconds and in the peak; the mean seconds per frame are those of the whole run.

Measured (docs/BENCHMARKS.md, "Issue 26: selfsr"; real slice-drop, 24 cases: ep_preclinical, Sunnybrook x 3,
the 20 ACDC hold-out patients, ED and ES): per subject 0.012 SSIM [0.007, 0.016] and 0.08 dB below `register`
(fusion +0.006 above), above it on 3 of 24; pre-trained on 16 ACDC training patients and used as is (`init`,
`steps=0`) +0.011 SSIM above `register`, from the ACDC hold-out alone (other cohorts level). Not a default anywhere.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from scipy import ndimage
from torch import nn
from tqdm.auto import tqdm

from cardiorecon.errors import InputError
from cardiorecon.geometry import voxel_to_world, world_to_voxel
from cardiorecon.lax_operator import LaxOperator
from cardiorecon.phase import lax_frame
from cardiorecon.preprocess import intensity_map
from cardiorecon.recon.fusion import coarsen_view
from cardiorecon.recon.guidance import guiding_views
from cardiorecon.recon.interpolate import interpolate_stack
from cardiorecon.recon.register import RegisterConfig, register_stack
from cardiorecon.recon.registry import ReconMethod, Work, register_method

Base = Literal["register", "linear"]
BASES = ("register", "linear")


@dataclass(frozen=True)
class SelfSRConfig:
    """Settings of `selfsr` (sizes in pixels of the working grid unless named _mm)."""

    base: Base = "register"  # the estimate the network corrects (a residual on top of it)
    use_lax: bool = True  # LAX views as training pairs beside the in-plane ones
    steps: int = 300  # training budget (Adam steps)
    batch_size: int = 16
    crop: int = 48  # training crops along the in-plane axis
    channels: int = 32
    layers: int = 6
    lr: float = 1e-3
    offsets: int = 4  # sampling phases o = i S / offsets per axis and image
    per_frame: bool = False  # one network per frame instead of one for all requested frames
    device: str = "cpu"
    num_threads: int = 1  # torch threads while training (small tensors; see fusion.FusionConfig)
    seed: int = 0
    init: str = ""  # pre-trained SRNet weights (a .safetensors path or its folder) to fine-tune from; "" none
    register: RegisterConfig = RegisterConfig()

    def __post_init__(self):
        if self.base not in BASES:
            raise ValueError(f"unknown selfsr base {self.base!r}; choose register or linear")
        for name in ("steps", "batch_size", "crop", "channels", "layers", "offsets", "num_threads"):
            low = 0 if name == "steps" else 1
            if isinstance(getattr(self, name), bool) or not getattr(self, name) >= low:
                raise ValueError(f"selfsr {name} must be an integer >= {low}, got {getattr(self, name)!r}")
        if not self.lr > 0:
            raise ValueError(f"selfsr lr must be positive, got {self.lr!r}")


# ----------------------------------------------------------------------------------- degradation

def slab_rows(image: np.ndarray, positions_px: np.ndarray, thickness_px: float, samples: int | None = None
              ) -> np.ndarray:
    """Slab averages of `image` (N0, ...) along axis 0: row j is the mean of the linear interpolant
    over [positions_px[j] - thickness_px / 2, + thickness_px / 2] (midpoint rule on `samples` points;
    edges clamped). Returns (len(positions_px), ...)."""
    image = np.asarray(image, np.float32)
    n = samples or max(3, int(np.ceil(thickness_px * 8)) | 1)
    offsets = (np.arange(n) + 0.5) / n * thickness_px - thickness_px / 2 if thickness_px > 0 else np.zeros(1)
    x = np.clip(np.asarray(positions_px, float)[:, None] + offsets[None], 0, image.shape[0] - 1)  # (J, n)
    lo = np.clip(np.floor(x).astype(int), 0, image.shape[0] - 1)
    hi = np.clip(lo + 1, 0, image.shape[0] - 1)
    w = (x - lo).reshape(x.shape + (1,) * (image.ndim - 1)).astype(np.float32)
    return ((1 - w) * image[lo] + w * image[hi]).mean(axis=1)


@dataclass(frozen=True)
class Sampling:
    """How the SAX stack samples the heart along its normal, in working-grid pixels (p mm each)."""

    step_px: float  # acquired slice step S / p
    thickness_px: float  # slice thickness T / p
    factor: int  # output slices per step

    @classmethod
    def of(cls, pixel_mm: float, step_mm: float, thickness_mm: float, factor: int) -> "Sampling":
        return cls(step_mm / pixel_mm, thickness_mm / pixel_mm, int(factor))


def degrade(image: np.ndarray, sampling: Sampling, offset_px: float = 0.0
            ) -> tuple[np.ndarray, np.ndarray] | None:
    """A high-resolution image (N0, ...) sampled along axis 0 as the SAX stack samples its normal.

    Returns (acquired (K, ...), target (J, ...)), J = (K - 1) f + 1: slab averages of width T at rows
    offset + k S and at the output step offset + j S / f (target[::f] == acquired). None when fewer
    than 2 acquired rows fit."""
    last = image.shape[0] - 1
    K = int(np.floor((last - offset_px) / sampling.step_px + 1e-9)) + 1
    if K < 2:
        return None
    f = sampling.factor
    dense = offset_px + np.arange((K - 1) * f + 1) * sampling.step_px / f
    target = slab_rows(image, dense, sampling.thickness_px)
    return np.ascontiguousarray(target[::f]), target


def base_estimate(acquired: np.ndarray, factor: int, base: Base, register: RegisterConfig = RegisterConfig()
                  ) -> np.ndarray:
    """The base method along axis 0: acquired (K, N1) or (K, N1, M) -> (J, ...), J = (K - 1) f + 1.

    `register` aligns the (N1, M) images at the K rows (as it aligns SAX slices); a 2D input is a stack
    of 1D rows, registered as (N1, 3) images of the row repeated (a 1D demons along the row)."""
    acquired = np.asarray(acquired, np.float32)
    flat = acquired.ndim == 2
    stack = np.repeat(acquired[:, :, None], 3, axis=2) if flat and base == "register" else \
        acquired[:, :, None] if flat else acquired
    stack = np.moveaxis(stack, 0, -1)  # (N1, M, K): slices last, as interpolate_stack / register_stack
    if base == "linear":
        dense = interpolate_stack(stack, factor, "linear")
    elif base == "register":
        dense = register_stack(stack, factor, register)
    else:
        raise ValueError(f"unknown selfsr base {base!r}; choose register or linear")
    dense = np.moveaxis(dense, -1, 0)  # (J, N1, M)
    return dense[:, :, dense.shape[2] // 2] if flat else dense


@dataclass
class Pairs:
    """Training planes (dense slice axis first): base estimates, targets, acquired-row masks."""

    base: list[np.ndarray] = field(default_factory=list)  # (J, N)
    target: list[np.ndarray] = field(default_factory=list)  # (J, N)
    acquired: list[np.ndarray] = field(default_factory=list)  # (J,) bool
    source: list[str] = field(default_factory=list)

    def add(self, base: np.ndarray, target: np.ndarray, factor: int, source: str) -> None:
        mask = np.zeros(base.shape[0], bool)
        mask[::factor] = True
        self.base.append(np.asarray(base, np.float32))
        self.target.append(np.asarray(target, np.float32))
        self.acquired.append(mask)
        self.source.append(source)

    def extend(self, other: "Pairs") -> None:
        for a in ("base", "target", "acquired", "source"):
            getattr(self, a).extend(getattr(other, a))

    def __len__(self) -> int:
        return len(self.base)


def _phases(sampling: Sampling, offsets: int) -> np.ndarray:
    return np.arange(max(1, offsets)) * sampling.step_px / max(1, offsets)


def inplane_pairs(stack: np.ndarray, sampling: Sampling, config: SelfSRConfig = SelfSRConfig()) -> Pairs:
    """Pairs from the stack's own in-plane directions: (X, Y, Z) degraded along x, then along y; one
    plane (J, other in-plane axis) per acquired slice, axis and sampling phase."""
    pairs = Pairs()
    for axis, volume in (("x", stack), ("y", np.swapaxes(stack, 0, 1))):  # (N0, N1, Z), N0 degraded
        for o in _phases(sampling, config.offsets):
            out = degrade(volume, sampling, o)
            if out is None:
                continue
            acquired, target = out  # (K, N1, Z), (J, N1, Z)
            base = base_estimate(acquired, sampling.factor, config.base, config.register)
            for z in range(stack.shape[2]):
                pairs.add(base[:, :, z], target[:, :, z], sampling.factor, f"sax-{axis}")
    return pairs


def lax_plane(lax_image: np.ndarray, lax_affine: np.ndarray, sax_normal: np.ndarray, centre: np.ndarray,
              pixel_mm: float, size: int) -> np.ndarray | None:
    """The LAX image (H, W) resampled (bilinear) on a size x size plane grid of pixel_mm whose axis 0
    is the SAX normal projected onto the view (the direction the stack samples coarsely) and axis 1
    the view's other in-plane direction, centred on `centre` (world mm) projected onto the plane;
    cropped to a rectangle inside the view (border rows or columns with pixels outside dropped, the
    worst first). None when less than 8 x 8 pixels remain."""
    b0, b1 = lax_affine[:3, 0], lax_affine[:3, 1]
    m = np.cross(b0, b1)
    m /= np.linalg.norm(m)
    n = np.asarray(sax_normal, float) / np.linalg.norm(sax_normal)
    u = n - (n @ m) * m
    if np.linalg.norm(u) < 0.2:  # the view is nearly parallel to the SAX slices
        return None
    u /= np.linalg.norm(u)
    v = np.cross(m, u)
    c = np.asarray(centre, float)
    c = c - ((c - lax_affine[:3, 3]) @ m) * m
    r = (np.arange(size) - (size - 1) / 2) * pixel_mm
    pts = c + r[:, None, None] * u + r[None, :, None] * v  # (size, size, 3)
    vox = world_to_voxel(lax_affine, pts)
    H, W = lax_image.shape
    inside = (vox[..., 0] >= 0) & (vox[..., 0] <= H - 1) & (vox[..., 1] >= 0) & (vox[..., 1] <= W - 1)
    plane = ndimage.map_coordinates(np.asarray(lax_image, np.float32), [vox[..., 0], vox[..., 1]], order=1,
                                    mode="nearest")
    if not inside.any():
        return None
    rows, cols = np.flatnonzero(inside.any(axis=1)), np.flatnonzero(inside.any(axis=0))
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    while r1 - r0 >= 8 and c1 - c0 >= 8 and not inside[r0:r1, c0:c1].all():
        # drop the border row or column with the most pixels outside the view
        box = inside[r0:r1, c0:c1]
        edges = [(~box[0]).sum(), (~box[-1]).sum(), (~box[:, 0]).sum(), (~box[:, -1]).sum()]
        k = int(np.argmax(edges))
        r0, r1, c0, c1 = r0 + (k == 0), r1 - (k == 1), c0 + (k == 2), c1 - (k == 3)
    if r1 - r0 < 8 or c1 - c0 < 8:
        return None
    return plane[r0:r1, c0:c1]


def lax_pairs(plane: np.ndarray, sampling: Sampling, config: SelfSRConfig = SelfSRConfig(), name: str = "lax"
              ) -> Pairs:
    """Pairs from one LAX plane (axis 0 along the SAX normal, from `lax_plane`), one per phase."""
    pairs = Pairs()
    for o in _phases(sampling, config.offsets):
        out = degrade(plane, sampling, o)
        if out is None:
            continue
        acquired, target = out
        pairs.add(base_estimate(acquired, sampling.factor, config.base, config.register), target, sampling.factor,
                  name)
    return pairs


# --------------------------------------------------------------------------------------- network

@dataclass(frozen=True)
class SRNetConfig:
    """The architecture of saved `selfsr` weights (the JSON beside the .safetensors): a pre-trained
    network fits only a `SelfSRConfig` of the same channels, layers and base."""

    name: str = "selfsr_net"
    channels: int = 32
    layers: int = 6
    base: str = "register"

    @classmethod
    def of(cls, config: "SelfSRConfig") -> "SRNetConfig":
        return cls(channels=config.channels, layers=config.layers, base=config.base)


def load_srnet(path, config: "SelfSRConfig") -> "SRNet":
    """Pre-trained `selfsr` weights (`path`: NAME.safetensors, its stem, or a folder holding model.safetensors)
    for `config`; refuses (one line naming the JSON) weights of another architecture or base, or of another
    kind of model."""
    from cardiorecon.models.config import load_weights
    from cardiorecon.models.pretrained import resolve_weights

    stem = resolve_weights(Path(path), name="model")
    return load_weights(SRNet(config.channels, config.layers), SRNetConfig.of(config), stem)


class SRNet(nn.Module):
    """(B, 2, J, N) [base estimate, acquired-row mask] -> (B, 1, J, N) = base + residual."""

    def __init__(self, channels: int = 32, layers: int = 6):
        super().__init__()
        mods: list[nn.Module] = [nn.Conv2d(2, channels, 3, padding=1, padding_mode="replicate"), nn.ReLU()]
        for _ in range(max(0, layers - 2)):
            mods += [nn.Conv2d(channels, channels, 3, padding=1, padding_mode="replicate"), nn.ReLU()]
        last = nn.Conv2d(channels, 1, 3, padding=1, padding_mode="replicate")
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.body = nn.Sequential(*mods, last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :1] + self.body(x)


def _inputs(base: np.ndarray, acquired: np.ndarray) -> np.ndarray:
    """(J, N) base and (J,) mask -> (2, J, N)."""
    return np.stack([base, np.broadcast_to(acquired[:, None], base.shape).astype(np.float32)])


def train(pairs: Pairs, config: SelfSRConfig = SelfSRConfig(), progress: bool = False, desc: str = "selfsr",
          history: list | None = None, start: SRNet | None = None) -> SRNet:
    """Fit an SRNet on `pairs` for `config.steps` Adam steps: random crops (all pairs cropped to the
    shortest pair's rows, `crop` columns), random flips of both axes, L1 on the rows between acquired
    rows. `start`: weights to fine-tune (copied; the argument is not changed), else a new network.
    `history` (if given) receives the loss of every step."""
    if not len(pairs):
        raise InputError(None, "selfsr: no training pair could be made (images shorter than two slice steps)")
    device = torch.device(config.device)
    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)
    net = SRNet(config.channels, config.layers).to(device)
    if start is not None:
        net.load_state_dict(start.state_dict())
    opt = torch.optim.Adam(net.parameters(), lr=config.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, config.steps))
    rows = min(b.shape[0] for b in pairs.base)
    cols = min(config.crop, min(b.shape[1] for b in pairs.base))
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, min(config.num_threads, threads)))
    try:
        bar = tqdm(range(config.steps), desc=desc, unit="step", leave=False, disable=not progress)
        for _ in bar:
            x, y, w = [], [], []
            for i in rng.integers(0, len(pairs), config.batch_size):
                b, t, a = pairs.base[i], pairs.target[i], pairs.acquired[i]
                r0 = rng.integers(0, b.shape[0] - rows + 1)
                c0 = rng.integers(0, b.shape[1] - cols + 1)
                bi, ti, ai = b[r0:r0 + rows, c0:c0 + cols], t[r0:r0 + rows, c0:c0 + cols], a[r0:r0 + rows]
                if rng.random() < 0.5:
                    bi, ti, ai = bi[::-1], ti[::-1], ai[::-1]
                if rng.random() < 0.5:
                    bi, ti = bi[:, ::-1], ti[:, ::-1]
                x.append(_inputs(bi, ai))
                y.append(ti[None])
                w.append(np.broadcast_to(~ai[:, None], ti.shape)[None].astype(np.float32))
            x_t = torch.from_numpy(np.stack(x)).to(device)
            y_t = torch.from_numpy(np.ascontiguousarray(np.stack(y))).to(device)
            w_t = torch.from_numpy(np.stack(w)).to(device)
            loss = ((net(x_t) - y_t).abs() * w_t).sum() / w_t.sum().clamp_min(1.0)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            if history is not None:
                history.append(float(loss.detach()))
            bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
        bar.close()
    finally:
        torch.set_num_threads(threads)
    return net.eval()


@torch.no_grad()
def apply(net: SRNet, base: np.ndarray, factor: int, batch: int = 64) -> np.ndarray:
    """The network on the through-plane planes of a dense base estimate (X, Y, Z'): the (Z', Y) planes
    at every x and the (Z', X) planes at every y, the two orientations averaged."""
    device = next(net.parameters()).device
    mask = np.zeros(base.shape[2], bool)
    mask[::factor] = True
    out = np.zeros(base.shape, np.float32)
    for planes, back in ((np.transpose(base, (0, 2, 1)), lambda p: np.transpose(p, (0, 2, 1))),  # (X, Z', Y)
                         (np.transpose(base, (1, 2, 0)), lambda p: np.transpose(p, (2, 0, 1)))):  # (Y, Z', X)
        pred = np.empty(planes.shape, np.float32)
        for s in range(0, planes.shape[0], batch):
            x = np.stack([_inputs(p, mask) for p in planes[s:s + batch]])
            pred[s:s + batch] = net(torch.from_numpy(x).to(device))[:, 0].cpu().numpy()
        out += back(pred) / 2
    return out


# ------------------------------------------------------------------------------------- the method

@dataclass
class SelfSR:
    """A trained `selfsr` for one study: the network(s) and what it was trained on."""

    config: SelfSRConfig
    sampling: Sampling
    nets: dict  # frame -> SRNet, or None -> the one shared network
    notes: list[str] = field(default_factory=list)
    pairs: dict[str, int] = field(default_factory=dict)  # training planes by source
    seconds: float = 0.0  # training, data included
    history: list[float] = field(default_factory=list)
    fallback: bool = False  # too few slices: the base method alone
    operators: dict[str, LaxOperator] = field(default_factory=dict)  # the LAX views that gave training pairs

    def reconstruct(self, stack: np.ndarray, frame: int | None = None) -> np.ndarray:
        """(X, Y, Z) on the working grid -> (X, Y, (Z - 1) f + 1); acquired slices unchanged."""
        f = self.sampling.factor
        if f == 1:
            return np.asarray(stack, np.float32).copy()
        base = register_stack(stack, f, self.config.register) if self.config.base == "register" else \
            interpolate_stack(np.asarray(stack, np.float32), f, "linear")
        if self.fallback:
            return base
        net = self.nets.get(frame, self.nets.get(None))
        threads = torch.get_num_threads()
        torch.set_num_threads(max(1, min(self.config.num_threads, threads)))
        try:
            out = apply(net, base, f)
        finally:
            torch.set_num_threads(threads)
        out[:, :, ::f] = stack  # the acquired slices exactly as given
        return out


def fit(stacks: dict[int, np.ndarray], sampling: Sampling, config: SelfSRConfig = SelfSRConfig(),
        lax_planes: dict[str, list[np.ndarray]] | None = None, progress: bool = False,
        notes: list[str] | None = None) -> SelfSR:
    """Train `selfsr` on the given frames' stacks (X, Y, Z) and LAX planes ({view: [plane per frame]},
    from `lax_plane`). Fewer than 3 slices: no network, the base method alone (stated in the notes)."""
    t0 = time.perf_counter()
    notes = [] if notes is None else notes
    model = SelfSR(config, sampling, {}, notes)
    Z = next(iter(stacks.values())).shape[2]
    if Z < 3:
        msg = f"selfsr: a stack of {Z} slices has one gap, too little through-plane context: {config.base} alone"
        warnings.warn(msg)
        notes.append(msg)
        model.fallback = True
        return model
    if sampling.factor == 1:
        return model
    groups = {t: [t] for t in stacks} if config.per_frame else {None: list(stacks)}
    lax_planes = lax_planes or {}
    start = load_srnet(config.init, config) if config.init else None
    if start is not None and config.steps == 0:  # the pre-trained network as it is: no pairs to build
        model.nets[None] = start.to(torch.device(config.device)).eval()
        model.seconds = time.perf_counter() - t0
        notes.append(f"selfsr: {config.base} + CNN pre-trained ({config.init}), used as is (0 steps on this subject)")
        return model
    for key, frames in groups.items():
        pairs = Pairs()
        for i, t in enumerate(stacks):
            if t not in frames:
                continue
            pairs.extend(inplane_pairs(stacks[t], sampling, config))
            if config.use_lax:
                for name, planes in lax_planes.items():
                    if planes[i] is not None:
                        pairs.extend(lax_pairs(planes[i], sampling, config, f"lax-{name}"))
        for s in pairs.source:
            model.pairs[s] = model.pairs.get(s, 0) + 1
        model.nets[key] = train(pairs, config, progress, "  selfsr training" + ("" if key is None else f" frame {key}"),
                                model.history, start)
    model.seconds = time.perf_counter() - t0
    notes.append(f"selfsr: {config.base} + CNN " + (f"pre-trained ({config.init}), fine-tuned" if start else "trained")
                 + f" {config.steps} steps on "
                 + ", ".join(f"{n} {k}" for n, k in sorted(model.pairs.items()))
                 + f" planes ({model.seconds:.1f} s, in the seconds of the frame it trained at)")
    return model


def study_sampling(study, grid, factor: int, drop: int = 1, notes: list[str] | None = None) -> Sampling:
    """How a study's SAX stack samples its normal on its working grid (`autoencoder.ModelGrid`): the grid's pixel,
    `drop` times its slice step (2: every other slice dropped, as in the slice-drop protocol), the study's slice
    thickness (refused unless positive; slices thinner than a pixel use one pixel, with a warning and a note)."""
    notes = [] if notes is None else notes
    pixel = float(grid.image.spacing[0])
    thickness = float(study.sax.slice_thickness)
    if not (np.isfinite(thickness) and thickness > 0):
        raise InputError(study.sax.meta.get("source"), f"selfsr needs a positive slice thickness, got {thickness!r}")
    if thickness < pixel:
        msg = (f"selfsr: slices ({thickness:.2f} mm) are thinner than the working grid's pixels ({pixel:.2f} mm): "
               "the in-plane images cannot show a thinner slab; the degradation uses one pixel")
        warnings.warn(msg)
        notes.append(msg)
        thickness = pixel
    return Sampling.of(pixel, float(grid.image.spacing[2]) * drop, thickness, factor)


def prepare(study, grid, factor: int, frames: list[int], lax_views: list[str] | None = None,
            config: SelfSRConfig = SelfSRConfig(), progress: bool = False, notes: list[str] | None = None
            ) -> SelfSR:
    """`fit` for a Study on its working grid (`autoencoder.ModelGrid`): sampling from the grid's pixel
    and slice step and the study's slice thickness, LAX planes from the guiding views (`lax_views`,
    None: all; a name the study lacks is refused) around the grid centre. A view that misses the SAX stack
    is left out, with a note."""
    notes = [] if notes is None else notes
    sampling = study_sampling(study, grid, factor, notes=notes)
    pixel = float(grid.image.spacing[0])
    stacks = {t: grid.image.data[..., t] for t in frames}
    planes: dict[str, list[np.ndarray | None]] = {}
    # the views that cross the acquired stack (a view that misses it is skipped with a note)
    operators = guiding_views(study, grid, 1, lax_views, 1, notes) if config.use_lax else {}
    if operators:
        affine, shape = grid.image.affine, grid.image.spatial_shape
        normal = affine[:3, 2] / np.linalg.norm(affine[:3, 2])
        centre = voxel_to_world(affine, (np.asarray(shape, float) - 1) / 2)
        for name in operators:
            coarse = coarsen_view(study.lax[name], pixel)
            planes[name] = []
            for t in frames:
                image = lax_frame(coarse, t, study.num_frames)
                plane = lax_plane(image, coarse.affine, normal, centre, pixel, shape[0])
                planes[name].append(None if plane is None else intensity_map(plane).forward(plane))
    model = fit(stacks, sampling, config, planes, progress, notes)
    model.operators = {n: op for n, op in operators.items() if model.pairs.get(f"lax-{n}")}
    return model


@register_method
class SelfSRMethod(ReconMethod):
    """`selfsr`: a CNN trained on the study's own in-plane and LAX images corrects the base method (module
    docstring); out of every default list: measured below `register` on real slice-drop."""

    name = "selfsr"
    summary = ("register corrected by a small CNN trained on the study's own in-plane and LAX images "
               "(issue 26: below register on real scans)")
    guided_by_lax = True  # its training pairs come from the guiding views: a held-out view stays out
    seconds_per_frame = "7-171 s (UK Biobank-sized: 171 s for the first frame, which trains on every frame's pairs, then 7 s)"
    in_defaults = False
    Options = SelfSRConfig

    def prepare(self, work: Work) -> None:
        self.trained: dict[int | None, SelfSR] = {}  # frame (per_frame) or None -> the trained model

    def reconstruct_frame(self, work: Work, index: int, frame: int) -> np.ndarray:
        key = frame if self.options.per_frame else None
        if key not in self.trained:  # trained here, inside the frame's seconds and the peak memory
            frames = work.frames if key is None else [frame]
            self.trained[key] = prepare(work.study, work.grid, work.factor, frames, work.lax_views, self.options,
                                        work.progress, work.notes)
            work.operators.update(self.trained[key].operators)
        return self.trained[key].reconstruct(work.stack(frame), frame)


__all__ = ["BASES", "Pairs", "SRNet", "SRNetConfig", "Sampling", "SelfSR", "SelfSRConfig", "SelfSRMethod", "apply",
           "base_estimate", "degrade", "fit", "inplane_pairs", "lax_pairs", "lax_plane", "load_srnet", "prepare", "slab_rows", "study_sampling", "train"]
