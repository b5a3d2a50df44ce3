"""The report's figures (PNG), one colour per method everywhere.

Static figures are drawn with matplotlib; the slice/frame scroller's many small images are composed
with numpy and Pillow directly (milliseconds each), their labels left to the HTML around them.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from cardiorecon.io.nifti import atomic_write
from cardiorecon.report.findings import Measure, unit_values

#: Colours of well-known methods; any other name takes the first palette colour still free.
PINNED = {"nearest": "#7f7f7f", "linear": "#1f77b4", "cubic": "#ff7f0e", "diffae": "#2ca02c", "lag": "#d62728",
          "dmcvr": "#9467bd", "register": "#8c564b", "fusion": "#e377c2", "truth-image": "#222222"}
PALETTE = ["#17becf", "#bcbd22", "#8c564b", "#e377c2", "#9467bd", "#2ca02c", "#ff7f0e", "#d62728", "#1f77b4",
           "#7f7f7f", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5"]
#: Label contour colours (label value -> colour) with their names, for every figure and legend.
LABEL_COLOURS = {1: ("LV cavity", "#ff3030"), 2: ("LV myocardium", "#ffd000"), 3: ("RV cavity", "#00c8ff")}


def method_colours(methods: list[str]) -> dict[str, str]:
    """One colour per method, stable for a given list: pinned names keep theirs, others take free
    palette colours in order (so register, fusion or any new method gets a distinct colour)."""
    out = {m: PINNED[m] for m in methods if m in PINNED}
    free = [c for c in PALETTE if c not in out.values()]
    for m in methods:
        if m not in out:
            out[m] = free.pop(0) if free else "#444444"
    return out


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, path: Path, dpi: int = 100) -> Path:
    plt = _plt()
    out = atomic_write(Path(path), lambda tmp: fig.savefig(tmp, dpi=dpi, format="png", bbox_inches="tight"),
                       suffix=".png")
    plt.close(fig)
    return out


def _label_handles(truth_style: bool = True):
    from matplotlib.lines import Line2D

    hs = [Line2D([], [], color=c, lw=1.5, label=f"{n} (predicted)") for n, c in LABEL_COLOURS.values()]
    if truth_style:
        hs.append(Line2D([], [], color="0.55", lw=1.0, ls="--", label="reference contours (white, dashed)"))
    return hs


def _contours(ax, lab: np.ndarray | None, dashed: bool = False, lw: float = 0.8) -> None:
    if lab is None:
        return
    for v, (_, c) in LABEL_COLOURS.items():
        m = (lab == v).astype(float)
        if m.any() and not m.all():
            ax.contour(m.T, levels=[0.5], colors=["white" if dashed else c], linewidths=lw * (0.8 if dashed else 1),
                       linestyles="--" if dashed else "-", origin="lower")


# ----------------------------------------------------------------------------------- strip plots

def strip_figure(rows: list[dict], measures: list[Measure], methods: list[str], colours: dict[str, str],
                 path: Path, title: str = "") -> Path | None:
    """One panel per measure: every unit (case, frame[, structure]) as a dot per method, jittered,
    with the mean and its 95 % bootstrap interval as a bar; methods in their colours."""
    from cardiorecon.report.findings import paired_bootstrap

    panels = [(m, {me: np.array(list(unit_values(rows, m, me).values())) for me in methods}) for m in measures]
    panels = [(m, d) for m, d in panels if any(len(v) for v in d.values())]
    if not panels:
        return None
    plt = _plt()
    cols = min(3, len(panels))
    nrows = int(np.ceil(len(panels) / cols))
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.3 * nrows), squeeze=False)
    rng = np.random.default_rng(0)
    for ax, (measure, data) in zip(axes.flat, panels):
        ms = [m for m in methods if len(data[m])]
        for i, m in enumerate(ms):
            v = data[m]
            ax.scatter(i + rng.uniform(-0.18, 0.18, len(v)), v, s=14, color=colours[m], alpha=0.75, lw=0)
            _, lo, hi = paired_bootstrap(v)
            ax.plot([i - 0.3, i + 0.3], [v.mean()] * 2, color="black", lw=1.4)
            if np.isfinite(lo):
                ax.plot([i, i], [lo, hi], color="black", lw=1.0)
        ax.set_xticks(range(len(ms)))
        ax.set_xticklabels(ms, rotation=30, ha="right", fontsize=8)
        for tick, m in zip(ax.get_xticklabels(), ms):
            tick.set_color(colours[m])
        arrow = "higher is better" if measure.higher_is_better else "lower is better"
        ax.set_title(f"{measure.label}{' (' + measure.unit + ')' if measure.unit else ''}: {arrow}", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
        ax.tick_params(axis="y", labelsize=8)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save(fig, path)


# ---------------------------------------------------------------------------------- Bland-Altman

def bland_altman_figure(rows: list[dict], methods: list[str], colours: dict[str, str], path: Path) -> Path | None:
    """EF from the reconstruction minus the true EF against their mean, per ventricle; each method's
    bias (solid) and 95 % limits of agreement (bias +- 1.96 SD, dotted) in its colour."""
    pts = [r for r in rows if r["structure"] in ("lv", "rv") and r["ef"] != "" and r["true_ef"] != ""]
    if not pts:
        return None
    plt = _plt()
    sides = [s for s in ("lv", "rv") if any(r["structure"] == s for r in pts)]
    fig, axes = plt.subplots(1, len(sides), figsize=(5.2 * len(sides), 4.0), squeeze=False)
    for ax, s in zip(axes[0], sides):
        for m in methods:
            p = [r for r in pts if r["method"] == m and r["structure"] == s]
            if not p:
                continue
            est = np.array([float(r["ef"]) for r in p])
            true = np.array([float(r["true_ef"]) for r in p])
            mean, diff = (est + true) / 2, est - true
            ax.scatter(mean, diff, s=24, color=colours[m], label=m, alpha=0.85, lw=0)
            bias = diff.mean()
            ax.axhline(bias, color=colours[m], lw=1.0)
            if len(diff) > 1:
                sd = diff.std(ddof=1)
                for k in (-1.96, 1.96):
                    ax.axhline(bias + k * sd, color=colours[m], lw=0.7, ls=":")
        ax.axhline(0, color="black", lw=0.6)
        ax.set_xlabel("mean of reconstructed and true EF (%)", fontsize=9)
        ax.set_ylabel("reconstructed - true EF (percentage points)", fontsize=9)
        ax.set_title(f"{s.upper()} ejection fraction: Bland-Altman", fontsize=10)
        ax.legend(fontsize=7, loc="best")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return save(fig, path)


# ---------------------------------------------------------------------------------------- montage

def _crop_box(masks: list[np.ndarray], shape, margin: int = 4) -> tuple[slice, slice]:
    """Bounding box (2D) of the union of `masks` (any nonzero), with a margin; the whole image when empty."""
    u = np.zeros(shape[:2], bool)
    for m in masks:
        if m is not None:
            u |= np.asarray(m).reshape(shape[:2] + (-1,)).any(-1) if np.ndim(m) == 3 else np.asarray(m, bool)
    if not u.any():
        return slice(0, shape[0]), slice(0, shape[1])
    xs, ys = np.nonzero(u)
    return (slice(max(xs.min() - margin, 0), min(xs.max() + margin + 1, shape[0])),
            slice(max(ys.min() - margin, 0), min(ys.max() + margin + 1, shape[1])))


def montage_figure(fig_data: dict, methods: list[str], colours: dict[str, str], path: Path, num_slices: int = 4
                   ) -> Path | None:
    """New slices of one case and frame: the truth with its contours, then per method the
    reconstruction with its predicted contours (solid) over the reference ones (dashed) and the
    absolute error map |reconstruction - truth| beside it."""
    if not fig_data or "truth" not in fig_data:
        return None
    plt = _plt()
    new = fig_data["new"]
    picks = [new[int(i)] for i in np.unique(np.linspace(0, len(new) - 1, min(num_slices, len(new))).round())]
    names = [m for m in methods if m in fig_data]
    truth, tlab = fig_data["truth"], fig_data.get("truth_labels")
    ncol = 2 * len(picks)
    tile = 1.5
    fig, axes = plt.subplots(1 + len(names), ncol, figsize=(tile * ncol + 1.0, tile * (1 + len(names)) + 0.8),
                             squeeze=False, gridspec_kw={"wspace": 0.04, "hspace": 0.12})
    fig.subplots_adjust(left=0.06, right=0.9, top=1 - 0.45 / (tile * (1 + len(names)) + 0.8),
                        bottom=0.5 / (tile * (1 + len(names)) + 0.8))
    emax = 0.5
    im = None
    for c, z in enumerate(picks):
        ax = axes[0, 2 * c]
        ax.imshow(truth[:, :, z].T, cmap="gray", vmin=-1, vmax=1, origin="lower")
        _contours(ax, None if tlab is None else tlab[:, :, z])
        ax.set_title(f"slice {z}", fontsize=8)
        axes[0, 2 * c + 1].axis("off")
        for r, m in enumerate(names, start=1):
            img, lab = fig_data[m]
            ax = axes[r, 2 * c]
            ax.imshow(img[:, :, z].T, cmap="gray", vmin=-1, vmax=1, origin="lower")
            _contours(ax, None if tlab is None else tlab[:, :, z], dashed=True, lw=0.6)
            _contours(ax, None if lab is None else lab[:, :, z])
            err = axes[r, 2 * c + 1]
            im = err.imshow(np.abs(img[:, :, z] - truth[:, :, z]).T, cmap="magma", vmin=0, vmax=emax, origin="lower")
            if r == 1:
                err.set_title("|error|", fontsize=8)
    for r, name in enumerate(["reference"] + names):
        axes[r, 0].set_ylabel(name, fontsize=9, color=colours.get(name, "black"))
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    if im is not None:
        cax = fig.add_axes((0.92, 0.3, 0.012, 0.4))
        cb = fig.colorbar(im, cax=cax)
        cb.set_label("|error| (of the [-1, 1] range)", fontsize=7)
        cb.ax.tick_params(labelsize=7)
    if tlab is not None:
        fig.legend(handles=_label_handles(), loc="lower center", ncol=4, fontsize=7, frameon=False)
    fig.suptitle(f"{fig_data['case']}, frame {fig_data['frame']}: new slices", fontsize=9)
    return save(fig, path)


# ------------------------------------------------------------------------------------ LAX overlay

def lax_overlay_figures(fig_data: dict, methods: list[str], colours: dict[str, str], out_dir: Path, case: str,
                        frame, columns: int = 4, zoom: float = 2.0) -> list[tuple[str, Path]]:
    """One PNG per LAX view: the LAX image and, per method, the reconstruction sampled on the
    plane (intensity-matched) where the plane crosses the stack, the rest of the LAX image dimmed;
    cropped to that crossing region (the heart) and drawn at `zoom` x the pixel grid."""
    if not fig_data:
        return []
    plt = _plt()
    views = list(dict.fromkeys(v for v, _ in fig_data))
    out = []
    for v in views:
        ms = [m for m in methods if (v, m) in fig_data]
        if not ms:
            continue
        image, _, valid, _ = fig_data[(v, ms[0])]
        # the heart: where any method's predicted labels fall on the plane; else the plane's crossing
        heart = [valid & (fig_data[(v, m)][3] > 0) for m in ms if fig_data[(v, m)][3] is not None]
        heart = [h for h in heart if h.sum() >= 20]
        bx, by = _crop_box(heart, image.shape, margin=12) if heart else _crop_box([valid], image.shape, margin=8)
        crop = image[bx, by]
        lo, hi = np.percentile(crop, [1, 99])
        panels = [("LAX image", None)] + [(m, fig_data[(v, m)]) for m in ms]
        ncol = min(columns, len(panels))
        nrow = int(np.ceil(len(panels) / ncol))
        w, h = crop.shape  # shown transposed: width = x, height = y
        inch = zoom * max(w, h) / 100  # 100 px per inch at dpi 100: zoom x the pixel grid
        fig, axes = plt.subplots(nrow, ncol, figsize=(inch * ncol * w / max(w, h) + 0.2,
                                                      inch * nrow * h / max(w, h) + 0.7), squeeze=False)
        for ax, (name, d) in zip(axes.flat, panels):
            if d is None:
                ax.imshow(crop.T, cmap="gray", vmin=lo, vmax=hi, origin="lower")
                ax.contour(valid[bx, by].T.astype(float), levels=[0.5], colors=["lime"], linewidths=0.8, origin="lower")
                ax.set_title(name, fontsize=9)
            else:
                _, sampled, vmask, plab = d
                x = sampled.astype(np.float64)
                if vmask.sum() > 2:  # intensity-match the sampled plane to the LAX image inside the mask
                    A = np.stack([x[vmask], np.ones(vmask.sum())], 1)
                    coef, *_ = np.linalg.lstsq(A, image[vmask].astype(np.float64), rcond=None)
                    x = x * coef[0] + coef[1]
                shown = np.where(vmask, x, image * 0.4 + lo * 0.6)
                ax.imshow(shown[bx, by].T, cmap="gray", vmin=lo, vmax=hi, origin="lower")
                ax.contour(vmask[bx, by].T.astype(float), levels=[0.5], colors=["lime"], linewidths=0.6,
                           origin="lower")
                if plab is not None:
                    _contours(ax, np.where(vmask, plab, 0)[bx, by], lw=0.8)
                ax.set_title(name, fontsize=9, color=colours.get(name, "black"))
            ax.set_xticks([])
            ax.set_yticks([])
        for ax in list(axes.flat)[len(panels):]:
            ax.axis("off")
        from matplotlib.lines import Line2D

        handles = [Line2D([], [], color="lime", lw=1.2, label="plane crosses the SAX stack")]
        if any(fig_data[(v, m)][3] is not None for m in ms):
            handles += _label_handles(truth_style=False)
        fig.suptitle(f"{v} view, {case}, frame {frame}: reconstruction on the LAX plane", fontsize=9)
        fig.tight_layout(rect=(0, 0.06 if len(handles) > 1 else 0.04, 1, 1))
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 4), fontsize=7, frameon=False)
        out.append((v, save(fig, out_dir / f"lax_overlay_{v}.png")))
    return out


# ------------------------------------------------------------------------------------- lag curves

def lag_curves_figure(curves: dict, path: Path, most: int = 4) -> Path | None:
    """LAG's loss per iteration (total and its LAX and continuity terms), one panel per case and
    set of guiding views, one line per frame."""
    if not curves:
        return None
    plt = _plt()
    keys = list(curves)[:most]
    fig, axes = plt.subplots(1, len(keys), figsize=(4.4 * len(keys), 3.3), squeeze=False)
    for ax, key in zip(axes[0], keys):
        case, views = key
        for j, (t, hist) in enumerate(sorted(curves[key].items(), key=lambda kv: str(kv[0]))):
            it = [h["iteration"] for h in hist]
            c = f"C{j % 10}"
            ax.plot(it, [h["loss"] for h in hist], color=c, lw=1.4, label=f"frame {t}: total")
            if "lax" in hist[0]:
                ax.plot(it, [5 * h["lax"] for h in hist], color=c, lw=0.9, ls="--", label=f"frame {t}: 5 L_lax")
            if "continuity" in hist[0]:
                ax.plot(it, [5 * h["continuity"] for h in hist], color=c, lw=0.9, ls=":", label=f"frame {t}: 5 L_cont")
        ax.set_xlabel("iteration", fontsize=8)
        ax.set_ylabel("loss", fontsize=8)
        ax.set_title(f"{case}, guided by {views or 'no view'}", fontsize=9)
        ax.legend(fontsize=6)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    return save(fig, path)


# -------------------------------------------------------------------------------------- scroller

def _to_rgb(img: np.ndarray, lo: float = -1.0, hi: float = 1.0) -> np.ndarray:
    g = np.clip((img - lo) / (hi - lo), 0, 1)
    return np.repeat((g * 255).astype(np.uint8)[..., None], 3, -1)


def _paint_edges(rgb: np.ndarray, lab: np.ndarray | None, dotted: bool = False) -> None:
    if lab is None:
        return
    from scipy import ndimage

    for v, (_, c) in LABEL_COLOURS.items():
        m = lab == v
        if not m.any():
            continue
        edge = m & ~ndimage.binary_erosion(m)
        if dotted:
            edge &= (np.indices(m.shape).sum(0) % 2) == 0
        rgb[edge] = [int(c[i:i + 2], 16) for i in (1, 3, 5)] if not dotted else [255, 255, 255]


def _magma(x: np.ndarray) -> np.ndarray:
    import matplotlib

    return (matplotlib.colormaps["magma"](np.clip(x, 0, 1))[..., :3] * 255).astype(np.uint8)


def scroller_strip(truth: np.ndarray, truth_labels: np.ndarray | None, methods: list[tuple[np.ndarray, np.ndarray | None]],
                   zoom: int = 3, error_range: float = 0.5) -> bytes:
    """PNG bytes of one slice: top row the truth then each method (predicted contours solid, the
    reference contours dotted white), bottom row blank then each method's |error| (magma, 0 to
    `error_range`). Images (X, Y) are shown transposed with y up, as the other figures."""
    from PIL import Image

    def orient(a):
        return np.flipud(np.swapaxes(a, 0, 1))  # (X, Y) -> rows = y (top = high y), columns = x

    tiles_top, tiles_bottom = [], []
    t = _to_rgb(truth)
    _paint_edges(t, truth_labels)
    tiles_top.append(orient(t))
    tiles_bottom.append(np.full_like(orient(t), 255))  # no error map for the reference: blank (page colour)
    for img, lab in methods:
        rgb = _to_rgb(img)
        _paint_edges(rgb, truth_labels, dotted=True)
        _paint_edges(rgb, lab)
        tiles_top.append(orient(rgb))
        tiles_bottom.append(orient(_magma(np.abs(img - truth) / error_range)))
    sep = np.full((tiles_top[0].shape[0], 1, 3), 255, np.uint8)

    def row(tiles):
        return np.concatenate([x for t in tiles for x in (t, sep)][:-1], axis=1)

    grid = np.concatenate([row(tiles_top), np.full((1, row(tiles_top).shape[1], 3), 255, np.uint8),
                           row(tiles_bottom)], axis=0)
    im = Image.fromarray(grid).resize((grid.shape[1] * zoom, grid.shape[0] * zoom), Image.NEAREST)
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=True)
    return buf.getvalue()
