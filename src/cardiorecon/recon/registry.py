"""The table of reconstruction methods: each method is one class in its own module, found by name.

As diffusers keeps its schedulers and nnU-Net its trainers: a method declares its `name`, what it
needs (`weights`: which network, or none; `guided_by_lax`: it reads the guiding LAX views; whether
`--adapt` fine-tunes it), its `Options` (a frozen dataclass read from `ReconConfig`), and
`reconstruct_frame(work, index, frame)` (with an optional `prepare(work)` once per study). The
pipeline, evaluate, cohort and the CLI look methods up here and never compare method names.

A method's options come from `ReconConfig`: `options_from(config)` reads the fields it shares with
the others (register's demons, lag's settings), and `config.method_options[name]`, when the caller
gives one (`reconstruct --option KEY=VALUE`), replaces them whole (`options_for`). A method whose
settings `ReconConfig` does not name reads them only there, so adding one touches no other file.

Adding a method: one module under `recon/` holding a `@register_method` class, and one line in
`BUILTIN_MODULES` below (the module is imported the first time the table is read).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

if TYPE_CHECKING:  # pragma: no cover - types only
    from cardiorecon.autoencoder import ModelGrid
    from cardiorecon.lax_operator import LaxOperator
    from cardiorecon.plan import Plan
    from cardiorecon.volume import Study

#: The networks a method can need: a diffusion autoencoder, or DMCVR's morphology-conditioned one.
Weights = Literal["diffae", "dmcvr"]

#: The modules holding the built-in methods; importing one registers its classes. One line per module.
BUILTIN_MODULES = (
    "cardiorecon.recon.interpolate",  # nearest, linear, cubic
    "cardiorecon.recon.register",  # register
    "cardiorecon.recon.fusion",  # fusion
    "cardiorecon.recon.latent_interp",  # diffae
    "cardiorecon.recon.lag",  # lag
    "cardiorecon.recon.dmcvr",  # dmcvr
    "cardiorecon.recon.selfsr",  # selfsr (issue 26: measured below register, in no default list)
)

_METHODS: dict[str, type["ReconMethod"]] = {}
_loaded = False


@dataclass(frozen=True)
class NoOptions:
    """A method without settings."""


@dataclass
class Work:
    """One study on its working grid, as every method sees it.

    study: the study with the plan applied (phase pairing, LAX offsets); plan: its `Plan`; grid: the
    SAX on the working grid, intensities in [-1, 1] (`grid.image.data`: (X, Y, Z, T)); factor: the
    through-plane upsampling; frames: the SAX frames to reconstruct, in order; lax_views: the views
    the caller allows as guides (None: all); dense: the output (X, Y, (Z - 1) factor + 1, len(frames)),
    earlier frames already filled (a method may reuse them); notes: said to the user.
    A method records the LAX views it used in `operators` and per-frame results in `results`."""

    study: "Study"
    plan: "Plan"
    grid: "ModelGrid"
    factor: int
    frames: list[int]
    lax_views: list[str] | None
    dense: np.ndarray
    progress: bool = False
    notes: list[str] = field(default_factory=list)
    operators: dict[str, "LaxOperator"] = field(default_factory=dict)
    results: dict[int, Any] = field(default_factory=dict)

    def stack(self, frame: int) -> np.ndarray:
        """The acquired SAX slices (X, Y, Z) of `frame` on the working grid, in [-1, 1]."""
        return self.grid.image.data[..., frame]

    def follows(self, index: int) -> bool:
        """Whether frames[index] is the cine frame right after frames[index - 1] (4D reuse)."""
        return index > 0 and (self.frames[index] - self.frames[index - 1]) % self.study.num_frames == 1


class ReconMethod:
    """One reconstruction method. Subclasses set the class attributes and `reconstruct_frame`."""

    name: ClassVar[str]
    summary: ClassVar[str] = ""
    weights: ClassVar[Weights | None] = None  # the network it needs (None: the subject's images only)
    guided_by_lax: ClassVar[bool] = False  # reads the guiding LAX views (a held-out view must be left out)
    adaptable: ClassVar[bool] = False  # `--adapt` fine-tunes its network on the study first
    seconds_per_frame: ClassVar[str] = ""  # typical cost on this project's machines (docs/BENCHMARKS.md)
    # among the methods a run of "every method" takes by default (`pipeline.METHODS`: bench_real, the
    # golden test); False for a method measured not to earn its place there (selfsr). Named, it runs anywhere.
    in_defaults: ClassVar[bool] = True
    Options: ClassVar[type] = NoOptions

    def __init__(self, options: Any = None, model=None):
        self.options = self.Options() if options is None else options
        self.model = model

    @classmethod
    def options_from(cls, config) -> Any:
        """This method's options from a `ReconConfig` (the settings every method shares)."""
        return cls.Options()

    @classmethod
    def options_for(cls, config) -> Any:
        """The options a run uses: `config.method_options[name]` when the caller gave one (an instance
        of `Options`), else `options_from(config)`."""
        given = config.method_options.get(cls.name)
        if given is None:
            return cls.options_from(config)
        if not isinstance(given, cls.Options):
            raise TypeError(f"method {cls.name!r} takes {cls.Options.__name__} options, not {type(given).__name__}")
        return given

    @classmethod
    def takes(cls, option: str) -> bool:
        """Whether the method has an option of this name (e.g. lag's `init` and `warm`)."""
        return option in {f.name for f in fields(cls.Options)}

    @classmethod
    def weights_for(cls, options: Any) -> Weights | None:
        """The network the method needs with these options (`lag --init dmcvr` needs DMCVR's)."""
        return cls.weights

    def check_model(self, model, notes: list[str]) -> None:
        """Refuse a network of the wrong kind (ValueError); `notes` may say how it will be used."""
        want = self.weights_for(self.options)
        if want is None:
            return
        if model is None:
            raise ValueError(f"method {self.name!r} needs a {'DMCVR' if want == 'dmcvr' else 'DiffAE'} model")
        have = weights_kind(model)
        if have != want:
            raise ValueError(f"method {self.name!r} needs "
                             + ("DMCVR weights (a decoder with the morphology input), not plain DiffAE weights"
                                if want == "dmcvr" else "plain DiffAE weights, not DMCVR weights"))

    def prepare(self, work: Work) -> None:
        """Once per study, before the first frame (outside the per-frame timing)."""

    def reconstruct_frame(self, work: Work, index: int, frame: int) -> np.ndarray:
        """The dense stack (X, Y, (Z - 1) factor + 1) of SAX frame `frame` (= work.frames[index]), the
        acquired slices unchanged at every factor-th position, intensities in [-1, 1]."""
        raise NotImplementedError(f"{type(self).__name__} does not define reconstruct_frame")


def weights_kind(model) -> Weights:
    """'dmcvr' for a decoder with DMCVR's morphology input (its config says so), else 'diffae'."""
    return "dmcvr" if getattr(getattr(model, "config", None), "morph_channels", 0) else "diffae"


def register_method(cls: type[ReconMethod]) -> type[ReconMethod]:
    """Class decorator: put `cls` in the table under `cls.name` (a second class of the same name is refused)."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"{cls.__name__} has no method name")
    if name in _METHODS and _METHODS[name] is not cls:
        raise ValueError(f"method {name!r} is already registered by {_METHODS[name].__name__}")
    _METHODS[name] = cls
    return cls


def _load_builtins() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for module in BUILTIN_MODULES:
            importlib.import_module(module)


def methods() -> dict[str, type[ReconMethod]]:
    """Every registered method by name (built-in ones first, in table order, then others as registered)."""
    _load_builtins()
    order = {m: i for i, m in enumerate(BUILTIN_MODULES)}
    names = sorted(_METHODS, key=lambda n: order.get(_METHODS[n].__module__, len(order)))  # stable: keeps
    return {n: _METHODS[n] for n in names}  # the registration order within a module


def method_names() -> tuple[str, ...]:
    return tuple(methods())


def get_method(name: str) -> type[ReconMethod]:
    """The method class registered as `name` (ValueError naming the choices otherwise)."""
    table = methods()
    if name not in table:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(table)}")
    return table[name]


def default_method_names() -> tuple[str, ...]:
    """The methods a run of "every method" takes when none are named (`ReconMethod.in_defaults`)."""
    return tuple(n for n, cls in methods().items() if cls.in_defaults)


def methods_taking(option: str) -> list[str]:
    """The names of the methods that have an option of this name."""
    return [n for n, cls in methods().items() if cls.takes(option)]


def unregister_method(name: str) -> None:
    """Remove `name` from the table (tests that register a method of their own)."""
    _METHODS.pop(name, None)


__all__ = ["BUILTIN_MODULES", "NoOptions", "ReconMethod", "Work", "default_method_names", "get_method", "method_names",
           "methods", "methods_taking", "register_method", "unregister_method", "weights_kind"]
