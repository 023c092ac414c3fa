"""Paired statistics for an A/B comparison: the same examples scored under arm A and arm B.

Everything here is plain numbers in, plain numbers out (no LMs), so it is tested against scipy and hand-computed cases.
scipy does the work wherever it has the tool:
- mean difference B − A with a seeded paired-bootstrap CI (`scipy.stats.bootstrap` on the per-example differences,
  percentile method: resampling differences keeps each example's pair together);
- binary outcomes (every score 0 or 1): exact McNemar = a two-sided binomial test on the discordant pairs (`binomtest`);
- graded outcomes: Wilcoxon signed-rank (`scipy.stats.wilcoxon`, zeros dropped) and the sign test (`binomtest`);
- effect size: Cohen's d_z (mean difference / SD of the differences) and the matched-pairs rank-biserial correlation;
- examples needed for 80% power at the observed effect. scipy has no power helper, so:
  binary → Connor's (1987) normal approximation for McNemar from the discordant proportions;
  graded → the paired t-test's exact power from the noncentral t distribution (`scipy.stats.nct`), a close, slightly
  conservative stand-in for the Wilcoxon test (asymptotic relative efficiency 0.955 under normality).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import stats

from dspyrl.errors import DataError

POWER = 0.8


@dataclass
class PairedStats:
    """The full statistical picture of one paired comparison; `verdict` is the one line a person reads."""

    n: int
    mean_a: float
    mean_b: float
    mean_diff: float  # B − A
    ci_low: float
    ci_high: float
    confidence: float
    binary: bool
    test: str  # the primary test the verdict uses: "McNemar" or "Wilcoxon signed-rank"
    p_value: float
    alpha: float
    significant: bool
    scale: float  # 100 when scores live in [0, 1] (differences reported as points), else 1
    unit: str  # "points" or "" (raw score units)
    mcnemar: dict | None = None  # {"b_only": B right & A wrong, "a_only": A right & B wrong, "p_value"}
    wilcoxon: dict = field(default_factory=dict)  # {"statistic", "p_value"}
    sign_test: dict = field(default_factory=dict)  # {"b_better", "a_better", "ties", "p_value"}
    effect_size: dict = field(default_factory=dict)  # {"cohens_dz", "rank_biserial"}
    n_for_power: int | None = None  # examples needed to detect mean_diff at 80% power (None: no difference observed)
    power_method: str = ""
    verdict: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def paired_statistics(a, b, *, seed: int = 0, confidence: float = 0.95, alpha: float = 0.05,
                      n_resamples: int = 10_000, names: tuple[str, str] = ("A", "B")) -> PairedStats:
    """Compare per-example scores `a` and `b` (same examples, same order)."""
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise DataError(f"paired scores must be two equal-length lists, got {a.shape[0] if a.ndim else 0} and "
                        f"{b.shape[0] if b.ndim else 0} values")
    if len(a) < 2:
        raise DataError(f"a paired comparison needs at least 2 examples, got {len(a)}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise DataError("paired scores contain NaN or infinity", hint="score failures as a number (e.g. 0.0)")

    diff = b - a
    binary = bool(np.isin(a, (0.0, 1.0)).all() and np.isin(b, (0.0, 1.0)).all())
    unit_interval = bool(((a >= 0) & (a <= 1) & (b >= 0) & (b <= 1)).all())
    low, high = bootstrap_ci(diff, seed=seed, confidence=confidence, n_resamples=n_resamples)
    mcnemar = mcnemar_exact(a, b) if binary else None
    wilcoxon = wilcoxon_signed_rank(diff)
    sign = sign_test(diff)
    if binary:
        test, p_value = "McNemar", mcnemar["p_value"]
        n_power, power_method = mcnemar_sample_size(a, b, alpha=alpha), "McNemar, Connor (1987) normal approximation"
    else:
        test, p_value = "Wilcoxon signed-rank", wilcoxon["p_value"]
        n_power, power_method = paired_t_sample_size(diff, alpha=alpha), "paired t-test, noncentral t"
    result = PairedStats(
        n=len(a), mean_a=float(a.mean()), mean_b=float(b.mean()), mean_diff=float(diff.mean()),
        ci_low=low, ci_high=high, confidence=confidence, binary=binary, test=test, p_value=float(p_value),
        alpha=alpha, significant=bool(p_value < alpha), scale=100.0 if unit_interval else 1.0,
        unit="points" if unit_interval else "", mcnemar=mcnemar, wilcoxon=wilcoxon, sign_test=sign,
        effect_size={"cohens_dz": cohens_dz(diff), "rank_biserial": rank_biserial(diff)},
        n_for_power=n_power, power_method=power_method)
    result.verdict = verdict_line(result, names=names)
    return result


# ----------------------------------------------------------------------------------------------- the pieces
def bootstrap_ci(diff, *, seed: int = 0, confidence: float = 0.95, n_resamples: int = 10_000) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean (of paired differences, or of rewards), reproducible for a given seed."""
    diff = np.asarray(diff, dtype=float)
    if np.ptp(diff) == 0:  # every difference equal: the resampled mean cannot move (scipy would warn and return NaN)
        return float(diff[0]), float(diff[0])
    result = stats.bootstrap((diff,), np.mean, n_resamples=n_resamples, confidence_level=confidence,
                             method="percentile", rng=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def mcnemar_exact(a, b) -> dict:
    """Exact McNemar test: under H0 each discordant pair is equally likely to favour A or B."""
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    b_only = int(((b == 1) & (a == 0)).sum())
    a_only = int(((a == 1) & (b == 0)).sum())
    discordant = a_only + b_only
    p_value = 1.0 if discordant == 0 else float(stats.binomtest(b_only, discordant, 0.5).pvalue)
    return {"b_only": b_only, "a_only": a_only, "p_value": p_value}


def wilcoxon_signed_rank(diff) -> dict:
    diff = np.asarray(diff, dtype=float)
    if not np.any(diff != 0):  # all ties: nothing to rank (scipy returns p = 1 with a divide-by-zero warning)
        return {"statistic": 0.0, "p_value": 1.0}
    result = stats.wilcoxon(diff, zero_method="wilcox")
    return {"statistic": float(result.statistic), "p_value": float(result.pvalue)}


def sign_test(diff) -> dict:
    diff = np.asarray(diff, dtype=float)
    b_better, a_better = int((diff > 0).sum()), int((diff < 0).sum())
    nonzero = b_better + a_better
    p_value = 1.0 if nonzero == 0 else float(stats.binomtest(b_better, nonzero, 0.5).pvalue)
    return {"b_better": b_better, "a_better": a_better, "ties": int(len(diff) - nonzero), "p_value": p_value}


def cohens_dz(diff) -> float | None:
    """Mean difference in units of the differences' SD; None when the SD is 0 (undefined, not infinite)."""
    diff = np.asarray(diff, dtype=float)
    sd = float(diff.std(ddof=1))
    return None if sd == 0 else float(diff.mean() / sd)


def rank_biserial(diff) -> float:
    """Matched-pairs rank-biserial correlation (Kerby 2014): (R+ − R−) / (R+ + R−) over non-zero differences, in [-1, 1]."""
    diff = np.asarray(diff, dtype=float)
    diff = diff[diff != 0]
    if len(diff) == 0:
        return 0.0
    ranks = stats.rankdata(np.abs(diff))
    return float((ranks[diff > 0].sum() - ranks[diff < 0].sum()) / ranks.sum())


def mcnemar_sample_size(a, b, *, alpha: float = 0.05, power: float = POWER) -> int | None:
    """Pairs needed for a two-sided McNemar test to detect the observed discordance (Connor 1987):
    n = (z_{1-α/2}·√ψ + z_{power}·√(ψ − δ²))² / δ², ψ = p01 + p10, δ = p01 − p10."""
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    p_b_only = float(((b == 1) & (a == 0)).mean())
    p_a_only = float(((a == 1) & (b == 0)).mean())
    delta, psi = p_b_only - p_a_only, p_b_only + p_a_only
    if delta == 0:
        return None
    z_alpha, z_power = stats.norm.ppf(1 - alpha / 2), stats.norm.ppf(power)
    n = (z_alpha * math.sqrt(psi) + z_power * math.sqrt(max(psi - delta**2, 0.0))) ** 2 / delta**2
    return max(2, math.ceil(n))


def paired_t_power(n: int, dz: float, *, alpha: float = 0.05) -> float:
    """Exact power of a two-sided paired t-test with n pairs and standardized effect d_z."""
    df = n - 1
    t_crit = stats.t.ppf(1 - alpha / 2, df)
    noncentrality = dz * math.sqrt(n)
    return float(stats.nct.sf(t_crit, df, noncentrality) + stats.nct.cdf(-t_crit, df, noncentrality))


def paired_t_sample_size(diff, *, alpha: float = 0.05, power: float = POWER) -> int | None:
    """Smallest n whose paired t-test reaches `power` at the observed d_z (None when no difference was observed)."""
    diff = np.asarray(diff, dtype=float)
    if abs(diff.mean()) < 1e-9:  # float rounding of partial credit (e.g. 0.1 + 0.2 − 0.3), not a difference
        return None
    dz = cohens_dz(diff)
    if dz is None:  # every difference identical and non-zero: the smallest n the sign test can call significant
        return max(2, math.floor(math.log2(2 / alpha)) + 1)
    # start just under the normal approximation, then step up to the exact noncentral-t answer
    n = max(2, math.floor(((stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)) / abs(dz)) ** 2) - 2)
    if n > 10**6:  # the t and normal answers agree here, and scipy's t quantile takes no integer that large
        return n + 2
    while paired_t_power(n, abs(dz), alpha=alpha) < power:
        n += 1
    return n


# ----------------------------------------------------------------------------------------------- the verdict
def format_p(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def verdict_line(s: PairedStats, *, names: tuple[str, str] = ("A", "B")) -> str:
    """e.g. 'B beats A by +4.1 points [1.2, 7.0], p = 0.006 (McNemar, n = 200)' or 'no significant difference: …'."""
    name_a, name_b = names
    unit = f" {s.unit}" if s.unit else ""
    digits = 1 if s.unit else 3

    def number(x: float, signed: bool = True) -> str:
        return f"{x * s.scale:+.{digits}f}" if signed else f"{x * s.scale:.{digits}f}"

    # The test decides (McNemar for right/wrong scores, Wilcoxon for graded ones); the interval is the paired
    # bootstrap's. On few discordant pairs they can disagree (an interval of [2.1, 16.7] beside McNemar p = 0.125):
    # the line then says so instead of printing a verdict its own interval contradicts.
    tail = f"{format_p(s.p_value)} ({s.test}, n = {s.n})"
    interval = f"[{number(s.ci_low, False)}, {number(s.ci_high, False)}]"
    excludes_zero = s.ci_low > 0 or s.ci_high < 0
    if s.significant:
        if s.mean_diff >= 0:
            winner, loser, d, low, high = name_b, name_a, s.mean_diff, s.ci_low, s.ci_high
        else:  # report A − B so the winner's margin is positive and the CI reads the same way
            winner, loser, d, low, high = name_a, name_b, -s.mean_diff, -s.ci_high, -s.ci_low
        line = f"{winner} beats {loser} by {number(d)}{unit} [{number(low, False)}, {number(high, False)}], {tail}"
        if not excludes_zero:
            line += f"; decided by {s.test}: the {s.confidence:.0%} bootstrap interval still includes 0"
        return line
    line = f"no significant difference: {name_b} − {name_a} = {number(s.mean_diff)}{unit} {interval}, {tail}"
    if excludes_zero:
        line += (f"; decided by {s.test}: the {s.confidence:.0%} bootstrap interval excludes 0, but the test has too "
                 f"little evidence" + (f" ({s.mcnemar['b_only'] + s.mcnemar['a_only']} discordant pairs)"
                                       if s.mcnemar else ""))
    if s.n_for_power is not None:
        line += f"; about {s.n_for_power:,} examples would be needed to detect {number(s.mean_diff)}{unit} at 80% power"
    return line
