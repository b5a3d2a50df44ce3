"""A plain summary of a Study's views and geometry (what `cardiorecon info` prints)."""

from __future__ import annotations

from typing import Any

import numpy as np

from cardiorecon.geometry import angle_between_deg, plane_intersection, point_line_distance, slice_plane
from cardiorecon.volume import Study, Volume


def _view_info(volume: Volume) -> dict[str, Any]:
    return {
        "shape": list(volume.spatial_shape),
        "frames": volume.num_frames,
        "spacing_mm": [round(float(s), 4) for s in volume.spacing],
        "slice_thickness_mm": round(volume.slice_thickness, 3),
        "orientation": volume.orientation,
        "slice_normal": [round(float(v), 4) for v in volume.slice_normal],
        "origin_mm": [round(float(v), 3) for v in volume.origin],
    }


def lax_geometry(sax: Volume, view: Volume) -> dict[str, float]:
    """Angle (deg, 0..90) between a LAX plane's normal and the SAX normal (90 = the LAX plane
    contains the SAX normal), and the distance (mm) of the SAX stack centre to the LAX plane."""
    angle = angle_between_deg(view.slice_normal, sax.slice_normal)
    angle = min(angle, 180.0 - angle)
    distance = float(abs(slice_plane(view, 0).signed_distance(sax.center_world)))
    return {"angle_to_sax_normal_deg": round(angle, 2), "distance_to_sax_centre_mm": round(distance, 2)}


def describe_study(study: Study) -> dict[str, Any]:
    """JSON-ready dict: one entry per view with shape, frames, spacing, thickness, orientation;
    for LAX views their angle and distance to the SAX stack; the LV long axis where two LAX
    planes meet."""
    out: dict[str, Any] = {
        "source": study.meta.get("source"),
        "format": study.meta.get("format"),
        "ed_frame": study.ed_frame,
        "es_frame": study.es_frame,
        "sax": {**_view_info(study.sax), "centre_mm": [round(float(v), 3) for v in study.sax.center_world]},
        "lax": {name: {**_view_info(v), **lax_geometry(study.sax, v),
                       "frame_pairing": v.meta.get("sax_frame_pairing"),
                       "frame_pairing_rule": v.meta.get("sax_frame_pairing_rule", "fraction of the cycle")}
                for name, v in study.lax.items()},
        "labels": {
            "sax": study.sax_labels is not None,
            "lax": sorted(study.lax_labels),
            "labelled_frames": study.meta.get("labelled_frames", []),
        },
    }
    from cardiorecon.preprocess import heart_region

    out["heart_region"] = heart_region(study).to_json()
    names = [n for n in ("2ch", "4ch") if n in study.lax] or list(study.lax)[:2]
    if len(names) == 2:
        try:
            point, direction = plane_intersection(slice_plane(study.lax[names[0]]), slice_plane(study.lax[names[1]]))
            angle = angle_between_deg(direction, study.sax.slice_normal)
            out["long_axis"] = {
                "from_views": names,
                "direction": [round(float(v), 4) for v in direction],
                "angle_to_sax_normal_deg": round(min(angle, 180 - angle), 2),
                "distance_to_sax_centre_mm": round(point_line_distance(study.sax.center_world, point, direction), 2),
            }
        except ValueError:
            pass
    return out


def _short(pairing) -> str:
    if not pairing:
        return "-"
    return ", ".join(map(str, pairing)) if len(pairing) <= 12 else \
        ", ".join(map(str, pairing[:10])) + f", ... ({len(pairing)} frames)"


def format_description(info: dict[str, Any]) -> str:
    """Human-readable text of `describe_study`'s output."""
    lines = [f"study: {info['source']} ({info['format']})",
             f"ED frame: {info['ed_frame']}   ES frame: {info['es_frame']}"]

    def view_line(name: str, v: dict[str, Any]) -> str:
        sp = "x".join(f"{s:.3g}" for s in v["spacing_mm"])
        return (f"  {name:<7} shape {tuple(v['shape'])}  frames {v['frames']}  spacing {sp} mm  "
                f"thickness {v['slice_thickness_mm']:.3g} mm  orientation {v['orientation']}")

    sax = info["sax"]
    lines.append(f"SAX: {sax['shape'][2]} slices")
    lines.append(view_line("sax", sax))
    lines.append(f"LAX: {len(info['lax'])} views")
    for name, v in info["lax"].items():
        lines.append(view_line(name, v) + f"\n          angle to SAX normal {v['angle_to_sax_normal_deg']:.1f} deg, "
                     f"SAX centre {v['distance_to_sax_centre_mm']:.1f} mm from the plane"
                     f"\n          LAX frame per SAX frame by {v['frame_pairing_rule']}: "
                     f"{_short(v['frame_pairing'])}")
    if "long_axis" in info:
        la = info["long_axis"]
        lines.append(f"LV long axis ({' x '.join(la['from_views'])}): {la['angle_to_sax_normal_deg']:.1f} deg from the "
                     f"SAX normal, {la['distance_to_sax_centre_mm']:.1f} mm from the SAX centre")
    if info.get("heart_region"):
        hr = info["heart_region"]
        lines.append(f"heart region: {hr['size_mm']:.0f} mm square ({hr['source']})"
                     + "".join(f"\n  note: {n}" for n in hr["notes"]))
    lab = info["labels"]
    lines.append(f"labels: SAX {'yes' if lab['sax'] else 'no'} (frames {lab['labelled_frames']}), "
                 f"LAX {', '.join(lab['lax']) or 'none'}")
    return "\n".join(lines)
