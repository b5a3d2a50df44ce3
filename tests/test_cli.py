import json

from typer.testing import CliRunner

from cardiorecon.cli import app

runner = CliRunner()


def test_phantom_then_info_json_and_overlay(tmp_path):
    res = runner.invoke(app, ["phantom", "--out", str(tmp_path), "--subjects", "1", "--seed", "3",
                              "--cohort", "heart-failure", "--frames", "4"])
    assert res.exit_code == 0, res.output
    folder = tmp_path / "hf_0003"
    for name in ("sa.nii.gz", "la_2ch.nii.gz", "la_3ch.nii.gz", "la_4ch.nii.gz", "label_sa.nii.gz",
                 "label_la_4ch.nii.gz", "truth_sa.nii.gz", "truth_label_sa.nii.gz", "subject.json"):
        assert (folder / name).is_file(), name
    res = runner.invoke(app, ["info", str(folder), "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.output)
    assert info["sax"]["frames"] == 4 and info["sax"]["slice_thickness_mm"] == 8.0
    assert sorted(info["lax"]) == ["2ch", "3ch", "4ch"]
    for v in info["lax"].values():
        assert v["angle_to_sax_normal_deg"] > 89.0 and v["slice_thickness_mm"] == 6.0
    assert info["long_axis"]["angle_to_sax_normal_deg"] < 1.0
    res = runner.invoke(app, ["info", str(folder)])
    assert "SAX: " in res.output and "angle to SAX normal" in res.output
    res = runner.invoke(app, ["overlay", str(folder), "--out", str(tmp_path / "o.png")])
    assert res.exit_code == 0 and (tmp_path / "o.png").stat().st_size > 10_000


def test_info_on_bad_input_is_a_clear_error(tmp_path):
    res = runner.invoke(app, ["info", str(tmp_path / "missing")])
    assert res.exit_code == 2
    assert "missing" in res.output and "no such file or folder" in res.output
    assert "Traceback" not in res.output


def test_bad_cohort(tmp_path):
    res = runner.invoke(app, ["phantom", "--out", str(tmp_path), "--cohort", "athletes"])
    assert res.exit_code == 2 and "healthy or heart-failure" in res.output
