"""The typer app of the `cardiorecon` console script and what its commands share: one-line
errors (exit 2), the device, the output folder check, --frames, --align, --lag-warm and --option.

The commands live in the modules of this package, one per group (`cli/__init__.py` lists them).
"""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Dense cardiac volumes from sparse SAX cine MRI, guided by LAX views.")


@app.callback()
def _root() -> None:
    """Dense cardiac volumes from sparse SAX cine MRI, guided by LAX views."""
    from cardiorecon.errors import use_one_line_warnings

    use_one_line_warnings()  # issue 29: one line per warning, naming the file, no Python source line


def fail(exc: Exception) -> None:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(code=2)


DEVICE_HELP = "Where the networks run: auto (CUDA when a GPU is visible, else CPU), cpu or cuda"
ALIGN_HELP = "Breath-hold alignment of the SAX slices to the LAX views first: auto (when a LAX view exists), on or off"
ADAPT_HELP = ("diffae, lag, dmcvr: fine-tune a copy of the model for STEPS steps on this study's own acquired "
              "SAX slices and its guiding LAX views first (0: off; default: ReconConfig.adapt)")
FRAMES_HELP = ("ed, es, ed,es, all, a frame index from 0, or indices like 0,5,10 (the same in every command; "
               "negative indices are refused)")
FACTOR_HELP = ("Through-plane upsampling factor f: f - 1 new slices in every gap, Z' = (Z - 1) f + 1, acquired "
               "slices kept in place")
LAX_THICKNESS_HELP = ("LAX slice thickness in mm for every view (default: the header's, or 6 mm where the "
                      "header's is not a cine slice's, with a warning)")


#: Options several commands share (typer reads one OptionInfo in as many commands as use it).
ALIGN_OPTION = typer.Option("auto", "--align", help=ALIGN_HELP)
DEVICE_OPTION = typer.Option("auto", "--device", help=DEVICE_HELP)
ADAPT_OPTION = typer.Option(None, "--adapt", min=0, help=ADAPT_HELP)
LAX_THICKNESS_OPTION = typer.Option(None, "--lax-thickness", help=LAX_THICKNESS_HELP)


def torch_device(name: str):
    """The torch device `--device` names (one clear line and exit 2 when it cannot be had)."""
    from cardiorecon.device import resolve_device
    from cardiorecon.errors import CardioReconError

    try:
        return resolve_device(name)
    except CardioReconError as exc:
        fail(exc)


def check_align(align: str) -> None:
    if align not in ("auto", "on", "off"):
        fail(ValueError(f"--align must be auto, on or off, not {align!r}"))


def resolve_align(study, align: str, views):
    """The breath-hold alignment `--align` asks for (None for off, or auto without LAX), with its
    notes and shifts echoed."""
    from cardiorecon.align import resolve_alignment

    check_align(align)
    alignment = resolve_alignment(study, align, views)
    if alignment is not None:
        for note in alignment.notes:
            typer.echo(f"note: {note}")
        rms = float((alignment.sax_shifts_mm ** 2).sum(1).mean() ** 0.5)
        typer.echo(f"aligned with {','.join(alignment.lax_views) or 'no LAX view'}: shifts RMS {rms:.2f} mm, "
                   f"intersection NCC {alignment.mean_ncc('before'):.3f} -> {alignment.mean_ncc('after'):.3f} "
                   f"({alignment.seconds:.1f} s)")
    return alignment


def parse_frames(frames: str):
    """--frames text -> 'ed' | 'es' | 'all' | index | [indices, ed, es]; FrameSelectionError (exit 2) otherwise."""
    from cardiorecon.volume import parse_frames

    return parse_frames(frames)


def frames_or_fail(frames: str):
    """`parse_frames`, ending with one line and exit 2 on a bad value (before any work)."""
    from cardiorecon.errors import CardioReconError

    try:
        return parse_frames(frames)
    except CardioReconError as exc:
        fail(exc)


#: the files `evaluate` and `report` write into --out (an input there is refused before any work)
REPORT_FILES = ("results.csv", "summary.md", "report.html", "failures.csv")


def check_out(out: Path, inputs: list[Path], names: tuple[str, ...] = ()) -> None:
    """Refuse an unusable --out before any work starts (exit 2, one line)."""
    from cardiorecon.errors import CardioReconError
    from cardiorecon.io.nifti import check_output_folder

    try:
        check_output_folder(out, list(inputs), names)
    except CardioReconError as exc:
        fail(exc)


LAG_WARM_HELP = ("lag over a cine: start each frame from the previous frame's optimised codes (previous), "
                 "from its own seeds plus the previous frame's correction (delta), or from its own seeds (off)")


def check_lag_warm(lag_warm: str, method: str) -> None:
    from cardiorecon.recon.config import LAG_WARM

    check_method_option("--lag-warm", lag_warm, "off", "warm", method, LAG_WARM)


def method_class(method: str):
    """The method registered as `method` (exit 2 naming the choices otherwise)."""
    from cardiorecon.recon.registry import get_method, method_names

    try:
        return get_method(method)
    except ValueError:
        fail(ValueError(f"--method must be one of {', '.join(method_names())}"))


def check_method_option(flag: str, value: str, default: str, option: str, method: str, choices) -> None:
    """Refuse a value outside `choices`, or one other than the default for a method without `option`."""
    from cardiorecon.recon.registry import methods_taking

    if value not in choices:
        fail(ValueError(f"{flag} must be one of {', '.join(choices)}, not {value!r}"))
    if value != default and not method_class(method).takes(option):
        fail(ValueError(f"{flag} {value} applies to --method {', '.join(methods_taking(option))}, not {method}"))


OPTION_HELP = ("KEY=VALUE: one of the method's own options (`cardiorecon methods` lists them with their defaults; "
               "e.g. selfsr: steps=50, base=linear, use_lax=false, per_frame=true); repeatable")


def settable_options(cls) -> dict[str, tuple[object, object]]:
    """The options of method class `cls` that a KEY=VALUE can set: {name: (type, default)} for the fields
    of its `Options` that are a number, a flag, a string or a choice of strings (nested settings are not)."""
    import dataclasses
    import typing

    hints = typing.get_type_hints(cls.Options)
    out = {}
    for f in dataclasses.fields(cls.Options):
        hint = hints[f.name]
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if typing.get_origin(hint) is not typing.Literal and len(args) == 1:  # X | None
            hint = args[0]
        if hint in (bool, int, float, str) or typing.get_origin(hint) is typing.Literal:
            out[f.name] = (hint, f.default)
    return out


def _option_value(key: str, hint, text: str):
    import typing

    if typing.get_origin(hint) is typing.Literal:
        if text not in typing.get_args(hint):
            raise ValueError(f"--option {key} must be one of {', '.join(map(str, typing.get_args(hint)))}, not {text!r}")
        return text
    if hint is bool:
        flags = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}
        if text.lower() not in flags:
            raise ValueError(f"--option {key} is true or false, not {text!r}")
        return flags[text.lower()]
    try:
        return hint(text)
    except ValueError:
        raise ValueError(f"--option {key} must be {'an integer' if hint is int else 'a number'}, not {text!r}") from None


def with_method_options(method: str, pairs: list[str], config, device=None):
    """`config` with `method`'s options set from KEY=VALUE `pairs` (`ReconConfig.method_options`), and its
    `device` option, when it has one that `pairs` leave alone, set to `device` (the command's --device).
    Exit 2 with one line on an unknown key or a bad value."""
    import dataclasses

    cls = method_class(method)
    settable = settable_options(cls)
    values = {}
    try:
        for pair in pairs:
            key, sep, text = pair.partition("=")
            key = key.strip()
            if not sep or key not in settable:
                choices = ", ".join(settable) or "none"
                raise ValueError(f"--option {pair!r}: {method} takes KEY=VALUE with KEY one of {choices}")
            values[key] = _option_value(key, settable[key][0], text.strip())
        if "device" in values:
            values["device"] = str(torch_device(values["device"]))
        elif device is not None and "device" in settable:
            values["device"] = str(device)
        if not values:
            return config
        options = dataclasses.replace(cls.options_for(config), **values)
    except ValueError as exc:
        fail(exc)
    return dataclasses.replace(config, method_options={**config.method_options, cls.name: options})


def main() -> None:  # pragma: no cover - console entry
    app()
