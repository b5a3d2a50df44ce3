"""Segmenting SAX slices, model-grid volumes and whole studies with the segmentation network."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cardiorecon.autoencoder import prepare_study, slices_to_volume, volume_to_slices
from cardiorecon.errors import InputError
from cardiorecon.geometry import resample
from cardiorecon.models.config import load_weights, read_config
from cardiorecon.models.segnet import SegConfig, SegNet
from cardiorecon.volume import Study, Volume

DEFAULT_SEGNET = Path(__file__).resolve().parent / "weights" / "segnet_tiny"  # crop network (model grid)
#: the whole-field network (issue 15): `segment_slices`, the segment command and evaluate use it
DEFAULT_WINDOW_SEGNET = Path(__file__).resolve().parent / "weights" / "segnet_synth"


def load_segnet(path: str | Path | None = None) -> SegNet:
    """The shipped segmentation network, or one from a weights stem / folder / training run."""
    p = DEFAULT_SEGNET if path is None else Path(path)
    candidates = [p / "model", p / "weights" / "model"] if p.is_dir() else [p.with_suffix("")]
    for stem in candidates:
        if stem.with_suffix(".safetensors").is_file():
            config = read_config(stem, SegConfig)
            net = load_weights(SegNet(config), config, stem)
            return net.eval()
    if path is None:
        raise InputError(p, "the shipped segmentation weights are missing from this installation")
    raise InputError(p, "no model.safetensors (or weights/model.safetensors) found")


@torch.no_grad()
def predict_slices(net: SegNet, x: torch.Tensor, batch_size: int = 128) -> torch.Tensor:
    """Class probabilities (N, C, H, W) of slices (N, 1, H, W) in [-1, 1]."""
    net.eval()
    device = next(net.parameters()).device  # tensors follow the model (cardiorecon.device); results on the CPU
    out = [torch.softmax(net(x[i:i + batch_size].float().to(device)), dim=1).cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(out) if out else torch.zeros((0, net.config.num_classes, *x.shape[2:]))


def segment_array(net: SegNet, data: np.ndarray, affine: np.ndarray | None = None) -> np.ndarray:
    """Label map (uint8, same shape) of an array (X, Y, Z[, T]) in [-1, 1] at the network's pixel
    spacing, centred on the heart. The working grid may be larger than a crop network's window: then
    its centre window is segmented (see below).

    A window network (`SegConfig.inference == "window"`) takes any grid at any pixel spacing and
    needs the array's `affine` (spacing and orientation): it segments as `segment_slices` does."""
    if net.config.inference == "window":
        if affine is None:
            raise ValueError(f"{net.config.name} segments any grid but needs the array's affine")
        return segment_slices(data, affine, net)
    size = net.config.image_size
    if min(data.shape[:2]) < size:
        raise ValueError(f"segment_array needs at least the network's window {size} x {size} in-plane, "
                         f"got {data.shape[:2]}")
    # A crop network (segnet_tiny) only ever saw heart-centred size x size crops: on a larger working
    # grid (centred on the heart region) it segments the centre crop, and the rest is background.
    # Sliding windows were measured worse: off-centre windows label bright non-heart tissue (phantom
    # hf_1000, 96 px grid, truth image: Dice LV 0.49 / Myo 0.32 / RV 0.07 by sliding window).
    X, Y = data.shape[:2]
    x0, y0 = (X - size) // 2, (Y - size) // 2
    crop = np.asarray(data, np.float32)[x0:x0 + size, y0:y0 + size]
    probs = predict_slices(net, volume_to_slices(crop))
    labels = slices_to_volume(probs.argmax(1, keepdim=True).to(torch.uint8), data.shape[2])
    out = np.zeros(data.shape, np.uint8)
    out[x0:x0 + size, y0:y0 + size] = labels.reshape(crop.shape)
    return out


def _to_native(volume: Volume, affine: np.ndarray, shape, cval: float, sax_shifts_mm=None) -> np.ndarray:
    """Linear resampling onto the input grid; with breath-hold shifts each input slice k is sampled
    where it was acquired (`geometry.shifted_slice_affine`)."""
    if sax_shifts_mm is None or not np.any(sax_shifts_mm):
        return resample(volume, affine, shape, order=1, cval=cval).data
    from cardiorecon.geometry import shifted_slice_affine

    return np.concatenate([resample(volume, shifted_slice_affine(affine, k, sax_shifts_mm[k]), (*shape[:2], 1),
                                    order=1, cval=cval).data for k in range(shape[2])], axis=2)


def segment_study(net: SegNet, study: Study, frames: list[int] | None = None,
                  sax_shifts_mm: np.ndarray | None = None) -> tuple[Volume, Volume]:
    """Segment the SAX of `study`: (labels on the model grid, labels on the input's own grid).

    The study is put on the network's grid (in-plane resample, crop around the heart, intensities
    to [-1, 1]); class probabilities are resampled back onto the input grid (linear) before the
    argmax, so the native label map overlays the input exactly. `sax_shifts_mm` (Z, 2): breath-hold
    shifts (`cardiorecon.align`): the model grid holds the aligned slices, and each native slice is
    sampled back from where it was acquired, so the native map still overlays the input.

    A window network segments every slice where it was acquired, over the whole field of view
    (`segment_slices`; breath-hold shifts do not change a per-slice segmentation); its "model
    grid" is the canonical whole-field grid at its pixel spacing (`canonical_affine`).
    """
    cfg = net.config
    if cfg.inference == "window":
        return _segment_study_window(net, study, frames)
    grid = prepare_study(study, cfg.pixel_spacing_mm, cfg.image_size, sax_shifts_mm=sax_shifts_mm)
    frames = list(range(study.num_frames)) if frames is None else frames
    data = grid.image.data[..., frames]
    X, Y, Z, T = data.shape
    probs = predict_slices(net, volume_to_slices(data))  # (T*Z, C, X, Y)
    model_labels = slices_to_volume(probs.argmax(1, keepdim=True), Z).astype(np.uint8)
    native_shape = study.sax.spatial_shape
    native = np.zeros((*native_shape, T), np.uint8)
    for ti in range(T):
        p = probs[ti * Z:(ti + 1) * Z].permute(2, 3, 0, 1).numpy()  # (X, Y, Z, C)
        per_class = [_to_native(Volume(p[..., c], grid.image.affine), study.sax.affine, native_shape,
                                cval=1.0 if c == 0 else 0.0, sax_shifts_mm=sax_shifts_mm)
                     for c in range(cfg.num_classes)]
        native[..., ti] = np.argmax(np.stack(per_class, -1), -1).astype(np.uint8)
    meta = {"frames": frames, "segmentation": cfg.name}
    return (Volume(model_labels, grid.image.affine, meta),
            Volume(native if T > 1 else native[..., 0], study.sax.affine, meta))


# ------------------------------------------------------------------ whole field of view (window networks)
#: the LV long axis points from the base toward the patient's left, anterior and inferior (RAS)
APEX_DIRECTION = np.array([-1.0, 1.0, -1.0]) / np.sqrt(3.0)


def canonical_flip(affine: np.ndarray) -> bool:
    """Whether the second in-plane axis must be reversed so that (u, v, n) is right-handed with
    the slice normal n = u x v pointing toward the apex: the orientation the window networks see.

    Reversing an index axis is not a mirror of the anatomy (the affine follows it): every slice
    is then seen from the same side, so the RV lies on the same side of the septum in every scan.
    """
    a = np.asarray(affine, np.float64)
    return bool(np.cross(a[:3, 0], a[:3, 1]) @ APEX_DIRECTION < 0)


def canonical_size(shape_xy: tuple[int, int], affine: np.ndarray, spacing_mm: float) -> tuple[int, int]:
    """In-plane size of the field of view resampled to `spacing_mm` pixels."""
    a = np.asarray(affine, np.float64)
    sx, sy = np.linalg.norm(a[:3, 0]), np.linalg.norm(a[:3, 1])
    return max(1, int(round(shape_xy[0] * sx / spacing_mm))), max(1, int(round(shape_xy[1] * sy / spacing_mm)))


def to_canonical(slices: np.ndarray | torch.Tensor, affine: np.ndarray, spacing_mm: float, labels: bool = False
                 ) -> torch.Tensor:
    """Slices (N, X, Y) of a stack with `affine` -> (N, 1, X', Y') on the whole field of view at
    `spacing_mm` pixels (bilinear, antialiased; nearest for labels), in canonical orientation.

    The resampled grid spans the same field of view (pixel edges aligned), so `from_canonical`
    is its exact geometric inverse."""
    x = torch.as_tensor(np.asarray(slices)).float()[:, None]
    size = canonical_size(tuple(x.shape[2:]), affine, spacing_mm)
    if labels:
        x = torch.nn.functional.interpolate(x, size=size, mode="nearest-exact")
    else:
        x = torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False,
                                            antialias=size[0] < x.shape[2])
    return x.flip(3) if canonical_flip(affine) else x


def from_canonical(probs: torch.Tensor, affine: np.ndarray, shape_xy: tuple[int, int]) -> torch.Tensor:
    """Class probabilities (N, C, X', Y') on the canonical grid -> (N, C, X, Y) on the input grid."""
    p = probs.flip(3) if canonical_flip(affine) else probs
    return torch.nn.functional.interpolate(p, size=tuple(shape_xy), mode="bilinear", align_corners=False)


def normalise_images(data: np.ndarray) -> np.ndarray:
    """Scanner intensities -> [-1, 1] by the 1st and 99th percentiles of the whole field of view
    (all slices and frames), the map the window networks are trained for."""
    from cardiorecon.preprocess import intensity_map

    return intensity_map(data).forward(data)


@torch.no_grad()
def predict_window(net: SegNet, x: torch.Tensor, sw_batch_size: int = 16, overlap: float = 0.25) -> torch.Tensor:
    """Class probabilities (N, C, H, W) of whole-field slices (N, 1, H, W) in [-1, 1] on the network's
    pixel spacing: MONAI sliding-window inference with windows of the training patch size and
    Gaussian blending of the overlaps."""
    from monai.inferers import sliding_window_inference

    net.eval()
    roi = (net.config.image_size, net.config.image_size)
    device = next(net.parameters()).device  # tensors follow the model (cardiorecon.device); results on the CPU
    out = [sliding_window_inference(x[i:i + 64].float().to(device), roi, sw_batch_size,
                                    lambda t: torch.softmax(net(t), 1), overlap=overlap, mode="gaussian",
                                    padding_mode="constant", cval=-1.0).cpu()
           for i in range(0, len(x), 64)]
    return torch.cat(out) if out else torch.zeros((0, net.config.num_classes, *x.shape[2:]))


def _keep_components(mask: np.ndarray, min_share: float) -> np.ndarray:
    """Connected components of a 2D/3D mask holding at least `min_share` of the largest one."""
    from scipy import ndimage

    lab, n = ndimage.label(mask)
    if n <= 1:
        return mask
    sizes = np.bincount(lab.ravel())[1:]
    keep = np.flatnonzero(sizes >= min_share * sizes.max()) + 1
    return np.isin(lab, keep)


def enclosed_share(mask_cavity: np.ndarray, mask_wall: np.ndarray) -> float:
    """Share of a 2D cavity's boundary pixels that touch the wall (4-neighbourhood); 0 for an empty cavity."""
    from scipy import ndimage

    if not mask_cavity.any():
        return 0.0
    boundary = mask_cavity & ~ndimage.binary_erosion(mask_cavity)
    touching = boundary & ndimage.binary_dilation(mask_wall)
    return float(touching.sum() / boundary.sum())


def basal_rule(labels: np.ndarray, min_enclosed: float = 0.5) -> np.ndarray:
    """The basal-slice rule of clinical volumetry (LV cavity counted only where the myocardium bounds
    it): on each slice whose LV cavity boundary touches the myocardium over less than `min_enclosed`
    of its length (the outflow tract or the atrium above the base), the cavity becomes background.
    Labels (X, Y, Z) uint8; returns a copy."""
    out = np.asarray(labels, np.uint8).copy()
    for z in range(out.shape[2]):
        s = out[:, :, z]
        if (s == 1).any() and enclosed_share(s == 1, s == 2) < min_enclosed:
            s[s == 1] = 0
    return out


def clean_labels(labels: np.ndarray, spacing_mm: tuple[float, float, float], max_offset_mm: float = 30.0,
                 rv_reach_mm: float = 10.0, cavity_hull: bool = True) -> np.ndarray:
    """Clean-up of one frame's label map (X, Y, Z): the largest 3D connected heart component
    (slices joined through their overlap); per slice the largest LV cavity and myocardium
    components and the RV components of at least a fifth of its largest, and on slices with an
    LV only those RV components within `rv_reach_mm` of it; holes of the LV cavity (papillary
    muscles) filled as cavity, and with `cavity_hull` the myocardium inside the cavity's convex
    hull too (papillary muscles against the wall; chosen on Sunnybrook SCD0000101/0201, training
    subjects: LV Dice 0.847 -> 0.872 and 0.913 -> 0.925 at step 900); slices whose LV centre lies more than `max_offset_mm` in-plane from
    the median of the others lose their LV (slice-to-slice consistency)."""
    from scipy import ndimage

    out = np.asarray(labels, np.uint8).copy()
    heart = _keep_components(out > 0, 1.0)
    out[~heart] = 0
    centres = {}
    for z in range(out.shape[2]):
        s = out[:, :, z]
        cleaned = np.zeros_like(s)
        for c, share in ((3, 0.2), (2, 1.0), (1, 1.0)):
            m = _keep_components(s == c, share)
            cleaned[m] = c
        lv = (cleaned == 1) | (cleaned == 2)
        if lv.any() and (cleaned == 3).any():
            dist = ndimage.distance_transform_edt(~lv, sampling=spacing_mm[:2])
            rv, n = ndimage.label(cleaned == 3)
            near = ndimage.minimum(dist, rv, index=np.arange(1, n + 1))
            cleaned[np.isin(rv, np.flatnonzero(np.asarray(near) > rv_reach_mm) + 1)] = 0
        cleaned[ndimage.binary_fill_holes(cleaned == 1) & (cleaned != 1)] = 1
        if cavity_hull and (cleaned == 1).sum() >= 3:
            # papillary muscles and trabeculae against the wall belong to the cavity (as in manual
            # contours and the phantom's labels): the myocardium inside the cavity's convex hull
            from skimage.morphology import convex_hull_image

            cleaned[convex_hull_image(cleaned == 1) & (cleaned == 2)] = 1
        out[:, :, z] = cleaned
        if (cleaned == 1).any():
            centres[z] = np.argwhere(cleaned == 1).mean(0) * np.asarray(spacing_mm[:2])
    if len(centres) >= 3:
        med = np.median(np.stack(list(centres.values())), axis=0)
        for z, c in centres.items():
            if np.linalg.norm(c - med) > max_offset_mm:
                s = out[:, :, z]
                s[(s == 1) | (s == 2)] = 0
    return out


def segment_slices(images: np.ndarray, affine: np.ndarray, net: SegNet | None = None, clean: bool = True
                   ) -> np.ndarray:
    """Labels (uint8, same shape) of a SAX stack `images` (X, Y, Z[, T]) in scanner units with its
    voxel-to-world `affine`, on the scan's own grid and whole field of view.

    Each slice is resampled in-plane to the network's pixel spacing over the whole field of view
    (canonical orientation, `canonical_flip`), intensities mapped to [-1, 1] by the percentiles of
    the whole stack, segmented by sliding windows, the class probabilities resampled back onto the
    input pixels before the argmax, and each frame cleaned (`clean_labels`). Needs a window network
    (default: the shipped `segnet_synth`)."""
    net = load_segnet(DEFAULT_WINDOW_SEGNET) if net is None else net
    if net.config.inference != "window":
        raise ValueError(f"segment_slices needs a whole-field (window) network, {net.config.name} is "
                         f"{net.config.inference!r}")
    data = np.asarray(images, np.float32)
    if data.ndim not in (3, 4):
        raise ValueError(f"images must be (X, Y, Z) or (X, Y, Z, T), got shape {data.shape}")
    d4 = data if data.ndim == 4 else data[..., None]
    X, Y, Z, T = d4.shape
    norm = normalise_images(d4)
    spacing = np.linalg.norm(np.asarray(affine, np.float64)[:3, :3], axis=0)
    out = np.zeros((X, Y, Z, T), np.uint8)
    for t in range(T):
        x = to_canonical(np.moveaxis(norm[..., t], 2, 0), affine, net.config.pixel_spacing_mm)
        probs = from_canonical(predict_window(net, x), affine, (X, Y))  # (Z, C, X, Y)
        lab = probs.argmax(1).permute(1, 2, 0).numpy().astype(np.uint8)
        out[..., t] = clean_labels(lab, tuple(spacing)) if clean else lab
    return out if data.ndim == 4 else out[..., 0]


def canonical_affine(affine: np.ndarray, shape_xy: tuple[int, int], spacing_mm: float) -> np.ndarray:
    """Voxel-to-world affine of the canonical grid of `to_canonical` (same field of view, pixel
    edges aligned, second axis reversed where `canonical_flip`)."""
    a = np.asarray(affine, np.float64)
    size = canonical_size(tuple(shape_xy), a, spacing_mm)
    fx, fy = shape_xy[0] / size[0], shape_xy[1] / size[1]
    m = np.eye(4)  # canonical index -> input index (pixel centres, align_corners=False)
    m[0, 0], m[0, 3] = fx, 0.5 * fx - 0.5
    if canonical_flip(a):
        m[1, 1], m[1, 3] = -fy, (size[1] - 0.5) * fy - 0.5
    else:
        m[1, 1], m[1, 3] = fy, 0.5 * fy - 0.5
    return a @ m


def _segment_study_window(net: SegNet, study: Study, frames: list[int] | None) -> tuple[Volume, Volume]:
    frames = list(range(study.num_frames)) if frames is None else frames
    labels = segment_slices(study.sax.data[..., frames], study.sax.affine, net)  # (X, Y, Z, T)
    canon = np.stack([to_canonical(np.moveaxis(labels[..., t], 2, 0), study.sax.affine, net.config.pixel_spacing_mm,
                                   labels=True)[:, 0].numpy() for t in range(len(frames))], -1)
    canon = np.moveaxis(canon, 0, 2).astype(np.uint8)  # (X', Y', Z, T)
    meta = {"frames": frames, "segmentation": net.config.name}
    T = len(frames)
    grid_affine = canonical_affine(study.sax.affine, study.sax.spatial_shape[:2], net.config.pixel_spacing_mm)
    return (Volume(canon if T > 1 else canon[..., 0], grid_affine, meta),
            Volume(labels if T > 1 else labels[..., 0], study.sax.affine, meta))
