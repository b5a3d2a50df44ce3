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


def _micro_weights(tmp_path):
    import torch

    from cardiorecon.models.config import DiffAEConfig, save_weights
    from cardiorecon.models.diffae import DiffAE

    cfg = DiffAEConfig(name="micro", image_size=32, pixel_spacing_mm=4.0, base_channels=8, channel_mult=(1, 2),
                       attention_levels=(), encoder_channels=8, z_dim=16)
    torch.manual_seed(0)
    return save_weights(DiffAE(cfg), cfg, tmp_path / "weights" / "model").with_suffix("")


def test_reconstruct_encode_decode_commands(tmp_path):
    import nibabel as nib
    import numpy as np

    res = runner.invoke(app, ["phantom", "--out", str(tmp_path), "--seed", "5", "--frames", "4", "--no-truth"])
    assert res.exit_code == 0, res.output
    subject = tmp_path / "healthy_0005"
    weights = _micro_weights(tmp_path)
    out = tmp_path / "rec"
    res = runner.invoke(app, ["reconstruct", str(subject), "--method", "lag", "--factor", "5", "--frames", "ed",
                              "--weights", str(weights), "--invert-steps", "2", "--decode-steps", "2",
                              "--lag-iterations", "2", "--lag-ddim-steps", "1", "--native", "--lax-views", "2ch,4ch",
                              "--out", str(out)])
    assert res.exit_code == 0, res.output
    img = nib.load(str(out / "recon_lag.nii.gz"))
    sa = nib.load(str(subject / "sa.nii.gz"))
    assert img.shape[2] == (sa.shape[2] - 1) * 5 + 1
    np.testing.assert_allclose(img.affine[:3, 2] * 5, sa.affine[:3, 2], atol=1e-4)
    assert nib.load(str(out / "recon_lag_native.nii.gz")).shape[:2] == sa.shape[:2]
    for name in ("lag_loss.csv", "lag_loss.png", "recon_lag.json"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "recon_lag.json").read_text())
    assert sorted(summary["lax_agreement"]["0"]["before"]) == ["2ch", "4ch"]
    for suffix in (".npz", ".safetensors"):
        codes = tmp_path / f"codes{suffix}"
        res = runner.invoke(app, ["encode", str(subject), "--frames", "ed", "--weights", str(weights),
                                  "--invert-steps", "2", "--out", str(codes)])
        assert res.exit_code == 0, res.output
        res = runner.invoke(app, ["decode", str(codes), "--weights", str(weights), "--decode-steps", "2",
                                  "--out", str(tmp_path / f"dec{suffix}.nii.gz")])
        assert res.exit_code == 0, res.output
        dec = nib.load(str(tmp_path / f"dec{suffix}.nii.gz"))
        # the working grid holds the heart region: the model's 32 px or more, square
        assert dec.shape[0] == dec.shape[1] >= 32 and dec.shape[2:] == (sa.shape[2], 1)


def test_reconstruct_rejects_unknown_views_and_methods(tmp_path):
    res = runner.invoke(app, ["phantom", "--out", str(tmp_path), "--seed", "6", "--frames", "4", "--no-truth"])
    subject = tmp_path / "healthy_0006"
    res = runner.invoke(app, ["reconstruct", str(subject), "--method", "magic", "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "--method must be one of" in res.output
    res = runner.invoke(app, ["reconstruct", str(subject), "--method", "lag", "--lax-views", "5ch",
                              "--weights", str(_micro_weights(tmp_path)), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "5ch" in res.output


def test_reconstruct_init_dmcvr_only_for_lag(tmp_path):
    res = runner.invoke(app, ["reconstruct", str(tmp_path / "missing"), "--method", "linear", "--init", "dmcvr",
                              "--out", str(tmp_path / "o")])
    assert res.exit_code != 0 and "--init dmcvr applies to --method lag" in res.output
    assert not (tmp_path / "o").exists()


def test_every_command_has_a_working_help():
    import typer.main

    names = sorted(typer.main.get_command(app).commands)
    assert {"info", "phantom", "overlay", "train", "train-seg", "segment", "align", "plan", "methods", "reconstruct",
            "evaluate", "report", "demo", "cohort", "encode", "decode", "sample"} <= set(names)
    for name in names:
        res = runner.invoke(app, [name, "--help"])
        assert res.exit_code == 0 and "Usage:" in res.output and name in res.output, (name, res.output)
