"""Every bad input of the sweep through the command line, each classified (issue 29).

    PYTHONPATH=src .venv/bin/python benchmarks/bad_input_sweep.py [--markdown OUT.md] [--only TEXT]

Classes:
- clean error: exit code 2, exactly one line `error: ...` containing what the case expects (the file or the
  option, and the problem), no traceback, no file written anywhere;
- handled: the input is usable (or partly usable) and the command says so: exit 0 and the case's own check
  passes (a warning naming the file, LAX views left out, EF blank, valid JSON, the right exit code ...);
- traceback: a Python traceback or an exception other than a clean exit;
- silent: anything else (exit 0 where an error was due, a wrong exit code, a wrong or missing result, files
  left behind by a refusal).

The cases are the table of tests/test_bad_inputs.py (CASES: clean errors expected; HANDLED and WARNED:
read with a warning) plus the issue-29 cases below that need their output inspected. Target: 0 tracebacks,
0 silent.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the builders of the test table (and conftest's helpers)

from typer.testing import CliRunner  # noqa: E402

import test_bad_inputs as T  # noqa: E402
from cardiorecon.cli import app  # noqa: E402
from cardiorecon.phantom import AcquisitionConfig, generate, sample_params, write_subject  # noqa: E402

RUNNER = CliRunner()


def _files(*roots: Path) -> set[Path]:
    return {p for r in roots if r.exists() for p in r.rglob("*") if p.is_file()}


def _invoke(args: list[str]):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = RUNNER.invoke(app, args)
    return result, [str(w.message) for w in caught]


def _traceback(result) -> bool:
    return "Traceback" in result.output or (result.exception is not None and not isinstance(result.exception,
                                                                                             SystemExit))


def classify_error(subject: Path, tmp: Path, build, expected: list[str]) -> tuple[str, str]:
    args = build(subject, tmp)
    before = _files(tmp, subject)
    result, _ = _invoke(args)
    if _traceback(result):
        return "traceback", repr(result.exception)[:160]
    errors = [ln for ln in result.output.splitlines() if ln.startswith("error: ")]
    written = _files(tmp, subject) - before
    if result.exit_code == 2 and len(errors) == 1 and all(t in errors[0] for t in expected) and not written:
        return "clean error", errors[0][:160]
    why = f"exit {result.exit_code}; {len(errors)} error line(s); {len(written)} file(s) written"
    return "silent", f"{why}: {(errors or [result.output.strip()[-120:]])[0][:160]}"


def classify_handled(subject: Path, tmp: Path, build, check) -> tuple[str, str]:
    args = build(subject, tmp)
    result, messages = _invoke(args)
    if _traceback(result):
        return "traceback", repr(result.exception)[:160]
    ok, detail = check(result, messages, tmp)
    return ("handled" if ok else "silent"), detail[:160]


def warned(texts: list[str]):
    def check(result, messages, tmp):
        hit = [m for m in messages if all(t in m for t in texts)]
        return result.exit_code == 0 and bool(hit), (hit or messages or [f"exit {result.exit_code}"])[0]

    return check


# ------------------------------------------------------------------ issue-29 cases inspected by their output

def strip_codes(path: Path) -> None:
    img = nib.load(str(path))
    out = nib.Nifti1Image(np.asanyarray(img.dataobj), img.affine)
    out.set_sform(None, code=0)
    out.set_qform(None, code=0)
    nib.save(out, str(path))


def b_extracts_without_codes(s, t):
    """UK Biobank sa_ED/sa_ES without sform/qform codes beside placed LAX views: the LAX views must be left out."""
    f = t / "subj"
    f.mkdir()
    sa, la = nib.load(str(s / "sa.nii.gz")), nib.load(str(s / "la_4ch.nii.gz"))
    for k, ph in enumerate(("ED", "ES")):
        nib.save(nib.Nifti1Image(np.asanyarray(sa.dataobj)[..., k], sa.affine), str(f / f"sa_{ph}.nii.gz"))
        strip_codes(f / f"sa_{ph}.nii.gz")
        nib.save(nib.Nifti1Image(np.asanyarray(la.dataobj)[..., k], la.affine), str(f / f"la_4ch_{ph}.nii.gz"))
    return ["info", str(f)]


def k_no_lax(result, messages, tmp):
    return result.exit_code == 0 and "LAX: 0 views" in result.output, next(
        (ln for ln in result.output.splitlines() if ln.startswith("LAX")), result.output[-120:])


def b_single_3d(s, t):
    """One 3D NIfTI with the default --frames ed: a one-frame study is its own ED."""
    img = nib.load(str(s / "sa.nii.gz"))
    nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj)[..., 0], img.affine), str(t / "one.nii.gz"))
    return ["reconstruct", str(t / "one.nii.gz"), "--method", "linear", "--factor", "2", "--align", "off",
            "--out", str(t / "out")]


def k_written(name):
    def check(result, messages, tmp):
        return result.exit_code == 0 and (tmp / "out" / name).is_file(), \
            f"exit {result.exit_code}; {name} {'written' if (tmp / 'out' / name).is_file() else 'missing'}"

    return check


def b_default_method(s, t):
    """reconstruct without --method: the default is the fast per-subject method, register."""
    return ["reconstruct", str(s), "--factor", "2", "--align", "off", "--no-native", "--out", str(t / "out")]


def b_align_no_lax(s, t):
    """align on a study without LAX views: alignment.json must be valid JSON (no NaN)."""
    f = T._copy(s, t)
    for p in f.glob("*la_*"):
        p.unlink()
    return ["align", str(f), "--out", str(t / "out")]


def k_strict_json(result, messages, tmp):
    path = tmp / "out" / "alignment.json"
    if result.exit_code != 0 or not path.is_file():
        return False, f"exit {result.exit_code}: {result.output[-120:]}"

    def refuse(constant):
        raise ValueError(f"{constant} in alignment.json")

    try:
        json.loads(path.read_text(), parse_constant=refuse)
    except ValueError as exc:
        return False, str(exc)
    return True, "alignment.json is valid JSON"


def b_cohort_ed_twice(s, t):
    """cohort --frames ed over a folder holding the subject and a symbolic link to it: one run, EF blank."""
    data = t / "data"
    data.mkdir()
    shutil.copytree(s, data / "subj")
    (data / "again").symlink_to("subj")
    return ["cohort", str(data), "--method", "linear", "--frames", "ed", "--no-meshes", "--workers", "1",
            "--out", str(t / "out")]


def k_cohort_ed(result, messages, tmp):
    import csv

    path = tmp / "out" / "cohort.csv"
    if result.exit_code != 0 or not path.is_file():
        return False, f"exit {result.exit_code}: {result.output[-120:]}"
    rows = list(csv.DictReader(path.open()))
    done = [r for r in rows if r["status"] == "done"]
    ok = len(done) == 1 and done[0]["lv_ef"] == "" and done[0]["lv_esv_ml"] == "" and float(done[0]["lv_edv_ml"]) > 0
    return ok, f"{len(done)} done row(s); lv_ef {done[0]['lv_ef']!r} lv_esv {done[0]['lv_esv_ml']!r}" if done \
        else f"{len(rows)} row(s), none done"


def b_cohort_all_fail(s, t):
    """cohort where every subject fails: exit 3 (documented), not 0."""
    data = t / "data"
    (data / "bad").mkdir(parents=True)
    (data / "bad" / "sa.nii.gz").write_bytes(b"not a NIfTI")
    return ["cohort", str(data), "--method", "linear", "--workers", "1", "--out", str(t / "out")]


def b_cohort_some_fail(s, t):
    """cohort where one of two subjects fails: exit 1."""
    data = t / "data"
    (data / "bad").mkdir(parents=True)
    (data / "bad" / "sa.nii.gz").write_bytes(b"not a NIfTI")
    shutil.copytree(s, data / "subj")
    return ["cohort", str(data), "--method", "linear", "--frames", "0", "--no-meshes", "--workers", "1",
            "--out", str(t / "out")]


def k_exit(code):
    def check(result, messages, tmp):
        return result.exit_code == code, f"exit {result.exit_code} (expected {code})"

    return check


INSPECTED = [
    ("ED/ES extracts without sform/qform codes", b_extracts_without_codes, k_no_lax),
    ("UKBB seg_la_2ch (atria) beside la_2ch", None, None),  # filled in main(): needs the subject
    ("one 3D NIfTI, default --frames ed", b_single_3d, k_written("recon_linear.nii.gz")),
    ("reconstruct without --method", b_default_method, k_written("recon_register.nii.gz")),
    ("align without LAX views (NaN NCC)", b_align_no_lax, k_strict_json),
    ("cohort --frames ed, subject reached twice", b_cohort_ed_twice, k_cohort_ed),
    ("cohort, every subject fails", b_cohort_all_fail, k_exit(3)),
    ("cohort, one of two subjects fails", b_cohort_some_fail, k_exit(1)),
]


def b_seg_la_atria(s, t):
    f = T._copy(s, t)
    lab = nib.load(str(f / "label_la_2ch.nii.gz"))
    nib.save(nib.Nifti1Image((np.asanyarray(lab.dataobj) == 1).astype(np.uint8), lab.affine),
             str(f / "seg_la_2ch.nii.gz"))
    (f / "label_la_2ch.nii.gz").unlink()
    return ["info", str(f)]


def k_seg_la(result, messages, tmp):
    hit = [m for m in messages if "seg_la_2ch.nii.gz" in m and "atri" in m]
    labels = next((ln for ln in result.output.splitlines() if ln.startswith("labels")), "")
    return result.exit_code == 0 and bool(hit) and "2ch" not in labels, (hit or [labels])[0]


INSPECTED[1] = ("UKBB seg_la_2ch (atria) beside la_2ch", b_seg_la_atria, k_seg_la)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--markdown", type=Path, help="also write the table as Markdown here")
    ap.add_argument("--only", default="", help="run only cases whose name contains this text")
    args = ap.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="bad_input_sweep_") as tmp_root:
        tmp_root = Path(tmp_root)
        acq = AcquisitionConfig(sax_matrix=48, lax_matrix=32)
        subject = write_subject(generate(sample_params(3, "healthy", num_frames=4), acq, truth=False),
                                tmp_root / "subject")
        plan = [("error", n, b, e) for n, b, e in T.CASES]
        plan += [("handled", n, b, warned(e)) for n, b, e in T.HANDLED + T.WARNED]
        plan += [("handled", n, b, k) for n, b, k in INSPECTED]
        for i, (kind, name, build, what) in enumerate(plan):
            if args.only and args.only not in name:
                continue
            if build is T.c_out_read_only and hasattr(__import__("os"), "geteuid") and __import__("os").geteuid() == 0:
                results.append((name, "skipped", "root writes into read-only folders", 0.0))
                continue
            tmp = tmp_root / f"case{i:03d}"
            tmp.mkdir()
            t0 = time.perf_counter()
            try:
                cls, detail = (classify_error if kind == "error" else classify_handled)(subject, tmp, build, what)
            except Exception as exc:  # noqa: BLE001 - a builder or check that broke is reported, not hidden
                cls, detail = "traceback", f"sweep: {type(exc).__name__}: {exc}"[:160]
            results.append((name, cls, detail, time.perf_counter() - t0))
            print(f"{cls:12s} {name}: {detail}", flush=True)
    counts = {c: sum(r[1] == c for r in results) for c in ("clean error", "handled", "traceback", "silent", "skipped")}
    print("\n" + ", ".join(f"{v} {k}" for k, v in counts.items()) + f" ({len(results)} cases)")
    if args.markdown:
        lines = ["| case | class | what the command said or did |", "|---|---|---|"]
        lines += [f"| {n} | {c} | {d.replace('|', '/')} |" for n, c, d, _ in results]
        lines += ["", ", ".join(f"{v} {k}" for k, v in counts.items()) + f" ({len(results)} cases)"]
        args.markdown.write_text("\n".join(lines) + "\n")
    return 1 if counts["traceback"] or counts["silent"] else 0


if __name__ == "__main__":
    sys.exit(main())
