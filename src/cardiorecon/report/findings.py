"""Which method wins, by how much, and whether it is beyond noise.

A measure (SSIM, Dice of the LV cavity, |EF error|, ...) selects rows of the long-format results
(`cardiorecon.evaluate.COLUMNS`) and gives one value per *unit*: a (case, frame, structure) row, or,
for a mean over structures, a (case, frame). Two methods are compared on the units both have
(paired): the mean of the differences, and its 95 % percentile bootstrap interval over units
resampled with replacement. A method is called better or worse than the reference only when that
interval excludes 0; otherwise indistinguishable. Units of one case are not independent (frames,
structures of one heart), so an interval from few cases describes those cases, not a population:
the findings say so.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: Fewer paired units than this: the bootstrap interval is too narrow to trust (warned).
MIN_PAIRS = 10
#: Fewer paired units than this: no verdict at all (a percentile bootstrap of 2-4 values is the range
#: of those values, not an interval).
MIN_TEST = 5
#: Fewer distinct cases than this: the interval describes these cases only (warned).
MIN_CASES = 3
STRUCTURE_NAMES = {"lv_cavity": "LV cavity", "lv_myocardium": "LV myocardium", "rv_cavity": "RV cavity"}


@dataclass(frozen=True)
class Measure:
    """One column of the summary table and one line of the findings.

    `structures`: the row structures it reads (a row matches when its structure equals one or starts
    with one followed by '@', e.g. 'lv_cavity@4ch'); `lax_prefix` reads every 'lax_*' row instead.
    `mean_over_structures`: average the matching structures within each (case, frame) first.
    """

    label: str
    column: str
    group: str  # "Image quality", "Segmentation", "Function", "Cost"
    higher_is_better: bool
    structures: tuple[str, ...] = ("image",)
    lax_prefix: bool = False
    mean_over_structures: bool = False
    digits: int = 3
    unit: str = ""
    headline: bool = True  # shown in the findings box
    scale: float = 1.0  # shown value = stored value x scale (e.g. 1000 for seconds shown in ms)

    def matches(self, structure: str) -> bool:
        if self.lax_prefix:
            return structure.startswith("lax_")
        return any(structure == s or structure.startswith(s + "@") for s in self.structures)


def unit_values(rows: list[dict], measure: Measure, method: str) -> dict[tuple, float]:
    """{unit: value} of one method: unit = (case, frame, structure), or (case, frame) for a mean
    over structures. Empty and non-finite cells are left out."""
    per: dict[tuple, list[float]] = {}
    for r in rows:
        if r["method"] != method or not measure.matches(str(r["structure"])):
            continue
        v = r.get(measure.column, "")
        if v == "" or v is None:
            continue
        v = float(v) * measure.scale
        if not np.isfinite(v):
            continue
        key = (str(r["case"]), str(r["frame"])) if measure.mean_over_structures else \
            (str(r["case"]), str(r["frame"]), str(r["structure"]))
        per.setdefault(key, []).append(v)
    return {k: float(np.mean(v)) for k, v in per.items()}


def paired_bootstrap(diff: np.ndarray, num_resamples: int = 4000, level: float = 0.95, seed: int = 0
                     ) -> tuple[float, float, float]:
    """Mean of paired differences and its percentile bootstrap interval (nan bounds for n < 2)."""
    diff = np.asarray(diff, dtype=np.float64)
    if diff.size == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(diff.mean())
    if diff.size < 2:
        return mean, float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, diff.size, size=(num_resamples, diff.size))
    boots = diff[idx].mean(axis=1)
    a = (1 - level) / 2
    lo, hi = np.quantile(boots, [a, 1 - a])
    return mean, float(lo), float(hi)


@dataclass
class Comparison:
    method: str
    mean: float  # the method's own mean over the paired units
    difference: float  # method - reference, mean over paired units
    low: float
    high: float
    n: int  # paired units
    cases: int
    verdict: str  # "better", "worse", "indistinguishable", "untested"


def compare(rows: list[dict], measure: Measure, method: str, reference: str, **bootstrap) -> Comparison | None:
    a, b = unit_values(rows, measure, method), unit_values(rows, measure, reference)
    keys = sorted(set(a) & set(b))
    if not keys:
        return None
    diff = np.array([a[k] - b[k] for k in keys])
    mean, lo, hi = paired_bootstrap(diff, **bootstrap)
    if not np.isfinite(lo) or len(keys) < MIN_TEST:
        verdict = "untested"
    elif lo > 0 or hi < 0:
        verdict = "better" if (mean > 0) == measure.higher_is_better else "worse"
    else:
        verdict = "indistinguishable"
    return Comparison(method, float(np.mean([a[k] for k in keys])), mean, lo, hi, len(keys),
                      len({k[0] for k in keys}), verdict)


@dataclass
class Finding:
    measure: Measure
    reference: str
    best: str | None
    best_mean: float
    comparisons: list[Comparison] = field(default_factory=list)
    sentence: str = ""
    warning: str = ""

    @property
    def n(self) -> int:
        return max((c.n for c in self.comparisons), default=0)


def _num(x: float, digits: int, sign: bool = False) -> str:
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def describe(c: Comparison, measure: Measure, with_n: bool = False) -> str:
    d = measure.digits
    unit = f" {measure.unit}" if measure.unit else ""
    n = f", n = {c.n}" if with_n else ""
    if c.verdict == "untested":
        return f"{c.method} {_num(c.difference, d, True)}{unit}{n}"
    return f"{c.method} {_num(c.difference, d, True)}{unit} [{_num(c.low, d, True)}, {_num(c.high, d, True)}]{n}"


def finding(rows: list[dict], measure: Measure, methods: list[str], reference: str = "linear",
            **bootstrap) -> Finding | None:
    """The finding of one measure: best method by mean, every other method's paired difference
    from `reference` with its 95 % interval, a plain sentence and, where n is small, a warning."""
    means = {}
    for m in methods:
        v = unit_values(rows, measure, m)
        if v:
            means[m] = float(np.mean(list(v.values())))
    if not means or reference not in means:
        return None
    pick = max if measure.higher_is_better else min
    best = pick(means, key=means.get)
    comps = [c for m in methods if m != reference and m in means
             for c in [compare(rows, measure, m, reference, **bootstrap)] if c is not None]
    f = Finding(measure, reference, best, means[best], comps)
    better = [c for c in comps if c.verdict == "better"]
    worse = [c for c in comps if c.verdict == "worse"]
    same = [c for c in comps if c.verdict == "indistinguishable"]
    untested = [c for c in comps if c.verdict == "untested"]
    d, label = measure.digits, measure.label
    ns = {c.n for c in comps}
    same_n = len(ns) == 1
    parts = [f"{label}: best {best} ({_num(means[best], d)}{' ' + measure.unit if measure.unit else ''})."]
    if comps and not better and not untested:
        parts.append(f"No method is better than {reference} beyond noise.")
    for name, group in (("Better than", better), ("Worse than", worse), ("Indistinguishable from", same)):
        if group:
            parts.append(f"{name} {reference}: " + "; ".join(describe(c, measure, not same_n) for c in group) + ".")
    if untested:
        parts.append(f"Too few paired values (fewer than {MIN_TEST}) to tell from {reference}: "
                     + "; ".join(describe(c, measure, not same_n) for c in untested) + ".")
    if comps and same_n:
        what = "[95% CI]" if len(untested) < len(comps) else "(mean; no interval)"
        parts.append(f"(Difference from {reference} {what}, n = {ns.pop()} paired units.)")
    f.sentence = " ".join(parts)
    n = f.n
    cases = max((c.cases for c in comps), default=0)
    warn = []
    if comps and n < MIN_PAIRS:
        warn.append(f"only {n} paired value(s): too few to tell methods apart; treat the intervals as rough")
    if comps and cases < MIN_CASES:
        warn.append(f"all from {cases} case(s): the interval describes these case(s), not a population")
    f.warning = "; ".join(warn)
    return f


def findings(rows: list[dict], measures: list[Measure], methods: list[str], reference: str | None = None,
             **bootstrap) -> list[Finding]:
    """Findings of every headline measure; the reference is `linear` when present, else the first method."""
    if reference is None:
        reference = "linear" if "linear" in methods else (methods[0] if methods else "")
    out = []
    for m in measures:
        if not m.headline:
            continue
        f = finding(rows, m, methods, reference, **bootstrap)
        if f is not None:
            out.append(f)
    return out


def near_best(rows: list[dict], measure: Measure, methods: list[str], best: str, **bootstrap) -> set[str]:
    """Methods whose paired difference from `best` has a 95 % interval that includes 0: not
    distinguishable from the best. Where no interval is computed (fewer than MIN_TEST paired values,
    the findings' "too few"), nothing is marked."""
    out = set()
    for m in methods:
        if m == best:
            continue
        c = compare(rows, measure, m, best, **bootstrap)
        if c is not None and c.verdict != "untested" and c.low <= 0 <= c.high:
            out.add(m)
    return out
