"""Real data in ../shared/data: skipped with a message where the folder is absent."""

import numpy as np
import pytest

from cardiorecon.describe import describe_study
from cardiorecon.io import read_guidepoints, read_study
from cardiorecon.io.contours import polygon_area, read_polygon

# From ../shared/data/README.md: slices, frames, pixel spacing (mm).
SUNNYBROOK = {"SCD0000101": (12, 1.367188), "SCD0000201": (13, 1.367188), "SCD0000301": (10, 1.289)}


@pytest.mark.parametrize("name", sorted(SUNNYBROOK))
def test_sunnybrook_dicom_loads_with_readme_geometry(shared_data, name):
    study = read_study(shared_data / "sunnybrook" / name)
    num_slices, spacing = SUNNYBROOK[name]
    assert study.sax.shape == (256, 256, num_slices, 20)
    assert 10 <= num_slices <= 13
    np.testing.assert_allclose(study.sax.spacing[:2], spacing, atol=1e-3)
    assert study.sax.spacing[2] == pytest.approx(study.sax.slice_thickness, abs=0.01)
    assert study.sax.slice_thickness in (8.0, 10.0)
    assert not study.lax
    # ED/ES from the contours: ED has the larger cavity.
    lab = study.sax_labels.data
    assert (lab[..., study.ed_frame] == 1).sum() > (lab[..., study.es_frame] == 1).sum()


def test_bivme_dicom_loads_sax_and_lax(shared_data):
    study = read_study(shared_data / "bivme_patient1" / "dicoms")
    assert study.sax.spatial_shape[2] == 6 and study.sax.num_frames == 25
    np.testing.assert_allclose(study.sax.spacing, [1.40625, 1.40625, 17.7], atol=0.05)
    assert study.sax.slice_thickness == 6.0
    assert sorted(study.lax) == ["2ch", "2ch_2", "4ch", "4ch_2", "lax1"]
    info = describe_study(study)
    # The first 4CH, second 4CH and first 2CH planes pass near the SAX stack centre.
    for view in ("4ch", "4ch_2", "2ch"):
        assert info["lax"][view]["distance_to_sax_centre_mm"] < 10.0, view
        assert info["lax"][view]["angle_to_sax_normal_deg"] > 60.0
    assert info["long_axis"]["angle_to_sax_normal_deg"] < 20.0


def test_bivme_guidepoints_lie_on_their_slices(shared_data):
    gp = read_guidepoints(shared_data / "bivme_patient1" / "guidepoints", 0)
    assert any(kind == "SAX_LV_ENDOCARDIAL" for _, kind in gp.contours)
    # every contour's slice has a plane (52 contours on 11 slices at frame 0), and its points lie on it
    assert len(gp.contours) >= 40 and len(gp.slice_planes) >= 6
    assert {sid for sid, _ in gp.contours} <= set(gp.slice_planes)
    for (sid, kind), pts in gp.contours.items():
        point, normal = gp.slice_planes[sid]
        assert np.abs((pts - point) @ normal).max() < 0.5, (sid, kind)
    # The SAX guide-point planes coincide with SAX slices of the DICOM study (RAS both).
    study = read_study(shared_data / "bivme_patient1" / "dicoms")
    heights = [(study.sax.slice_center(k) @ study.sax.slice_normal) for k in range(6)]
    sax_points = gp.contours[(2, "SAX_LV_ENDOCARDIAL")]
    h = float(np.mean(sax_points @ study.sax.slice_normal))
    assert min(abs(h - x) for x in heights) < 0.5


def test_sunnybrook_contour_mask_area_matches_polygon(shared_data):
    study = read_study(shared_data / "sunnybrook" / "SCD0000101")
    entry = study.meta["annotated"][0]
    folder = shared_data / "sunnybrook" / "contours" / "SC-HF-I-1" / "i-contours"
    number = int(entry["image"].split(".")[0])
    poly = read_polygon(folder / f"IM-0001-{number:04d}-icontour-manual.txt")
    mask = study.sax_labels.data[:, :, entry["slice"], entry["frame"]] == 1
    assert mask.sum() == pytest.approx(polygon_area(poly), rel=0.05)
    # The mask sits where the polygon is: its centroid matches the polygon's (x -> i, y -> j).
    ij = np.argwhere(mask).mean(axis=0)
    np.testing.assert_allclose(ij, poly.mean(axis=0), atol=2.0)
