"""The per-frame volumes and clinical summary `segment` prints and writes (issue 25)."""

import math

import numpy as np

from cardiorecon.metrics.function import study_function


def _labels():
    lab = np.zeros((10, 10, 2, 3), np.uint8)
    lab[:5, :4, :, 0] = 1  # 40 px x 2 slices x 0.04 mL = 1.6 mL
    lab[:5, :2, :, 1] = 1  # 0.8 mL
    lab[:3, :3, :, 2] = 1  # 0.72 mL
    lab[6:, 6:, 0, :] = 3  # 16 px x 1 slice = 0.64 mL
    lab[9, 0, 1, :] = 2  # one myocardium voxel = 0.04 mL
    return lab


def test_study_ed_es_used_when_segmented():
    rows, s = study_function(_labels(), (2.0, 2.0, 10.0), [0, 5, 9], 5, 9)
    assert [r["phase"] for r in rows] == ["", "ED", "ES"]
    assert s["ed_es"] == "study" and (s["ed_frame"], s["es_frame"]) == (5, 9)
    assert math.isclose(s["lv_edv_ml"], 0.8) and math.isclose(s["lv_esv_ml"], 0.72)
    assert math.isclose(s["lv_ef"], 10.0) and math.isclose(s["rv_ef"], 0.0)
    assert math.isclose(s["lv_mass_g"], 1.05 * 0.04)


def test_curve_gives_ed_es_without_study_frames():
    _, s = study_function(_labels(), (2.0, 2.0, 10.0), [0, 5, 9], None, None)
    assert s["ed_es"] == "curve" and (s["ed_frame"], s["es_frame"]) == (0, 9)
    assert math.isclose(s["lv_sv_ml"], 1.6 - 0.72) and math.isclose(s["lv_ef"], 55.0)


def test_one_frame_gives_no_ef_and_no_esv():
    rows, s = study_function(_labels()[..., :1], (2.0, 2.0, 10.0), [0], 0, None)
    assert math.isclose(s["lv_edv_ml"], 1.6) and math.isnan(s["lv_esv_ml"]) and math.isnan(s["lv_ef"])
    assert rows[0]["phase"] == "ED"
