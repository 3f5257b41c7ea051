"""The paper's claims, checked against the results.json files of finished runs.

Each ``claim_*`` function reads runs (never a model, never a split) and returns verdicts: PASS,
FAIL or NOT ENOUGH RUNS, with the numbers behind them (:mod:`.verdicts`: the pairing, the
one-sided Wilcoxon signed-rank test over (cell, seed) pairs and why that test). A cell is
(experiment, scenario, backbone, column, and whatever else must match: n_deltas, variant, the base
model's fingerprint where results.json records it); pairs are matched by seed within a cell. Every
rule is in its function's docstring; nothing here is chosen on test accuracy except where a claim
is about test accuracy itself.
"""
from __future__ import annotations

import statistics
from typing import Any, Callable, Iterable, Sequence

from .alpha import final_sweep
from .labels import column_of, row_variant, task_names
from .runs import Run
from .values import AGGREGATES, metric_value, number
from .verdicts import (FAIL, NOT_ENOUGH, PASS, Verdict, mean_diff_at_least_zero, most_cells_at_least_zero,
                       most_pairs_positive, pair, paired_verdict)

# ∆-Networks and their gate / BN ablations (Table 8): frozen base, ∆-modules on top.
# finetune_delta is not in it: it trains the backbone on purpose.
DELTA_FAMILY = frozenset({"delta", "all_skips", "all_skips_nobn", "all_skips_learnable", "all_skips_learnable_nobn",
                          "random_lambda", "random_lambda_nobn"})
HARD_SAMPLE_RATE = 0.3  # transfer's "low sample rates": at most 30 % of the training set


def cell(run: Run, *extra: Any) -> str:
    """A readable cell key: experiment · scenario · backbone · column (· extra) (· base <8 hex digits
    of results.json's ``base_fingerprint``, where recorded): runs on two builds of a base, which can
    differ under one cache key, are never paired."""
    fingerprint = run.results.get("base_fingerprint")
    parts = [run.experiment, run.scenario, run.backbone, column_of(run), row_variant(run), *map(str, extra),
             f"base {fingerprint[:8]}" if fingerprint else None]
    return " · ".join(p for p in parts if p)


def _items(runs: Iterable[Run], value: Callable[[Run], Any], *extra: Callable[[Run], Any]):
    return [(cell(r, *(f(r) for f in extra)), r.seed, value(r)) for r in runs]


def _n(r: Run) -> str:
    return f"n_deltas={r.n_deltas}"


# ------------------------------------------------------------------------------ 1. the base is kept
def claim_delta_keeps_base(runs: Sequence[Run]) -> list[Verdict]:
    """∆ methods keep the base exactly.

    Runs: method in the ∆ family (delta and its gate/BN ablations, not finetune_delta) with
    ∆-modules (results.json's n_deltas). PASS: every such run has ``base_model_unchanged: true``
    (bit-exact fingerprint), ``base_acc_before == base_acc_after`` exactly where both are numbers,
    and, in sequential runs, every task's final accuracy equal to its accuracy when trained
    (``tasks_when_trained``). FAIL: any run breaks any of these. NOT ENOUGH RUNS: no such run.
    """
    rule = "every ∆-family run: base_model_unchanged, base acc before == after, earlier tasks unchanged"
    scope = [r for r in runs if r.method in DELTA_FAMILY and r.n_deltas is not None]
    broken, acc_checked, seq_checked = [], 0, 0
    for r in scope:
        res, problems = r.results, []
        if res.get("base_model_unchanged") is not True:
            problems.append(f"base_model_unchanged is {res['base_model_unchanged']!r}" if "base_model_unchanged" in res
                            else "no base_model_unchanged in results.json")
        before, after = number(res.get("base_acc_before")), number(res.get("base_acc_after"))
        if before is not None and after is not None:
            acc_checked += 1
            if before != after:
                problems.append(f"base accuracy {before} -> {after}")
        when, final = res.get("tasks_when_trained") or {}, res.get("tasks") or {}
        if when:
            seq_checked += 1
            problems += [f"task {t}: {v} when trained -> {final.get(t)}" for t, v in when.items() if v != final.get(t)]
        if problems:
            broken.append({"run": str(r.path), "method": r.method, "problems": problems})
    verdict = NOT_ENOUGH if not scope else (FAIL if broken else PASS)
    summary = (f"{len(scope)} runs: fingerprint checked on all, base accuracy on {acc_checked}, earlier tasks on "
               f"{seq_checked}; {len(broken)} broken")
    if broken:
        summary += f" (e.g. {broken[0]['run']}: {broken[0]['problems'][0]})"
    return [Verdict("∆ methods keep the base exactly", verdict, rule, {"summary": summary, "runs": len(scope),
                    "broken": len(broken)}, broken)]


# ------------------------------------------------------------------------------ 2. PAINT's cost
def claim_paint_costs_base(runs: Sequence[Run]) -> list[Verdict]:
    """PAINT's chosen α costs base accuracy, and its sequential chain lowers earlier tasks.

    (a) Runs: method paint with numeric ``base_acc_before`` and ``base_acc_after``; a pair is one
    run (before, after). PASS: after < before strictly on more than half of the runs.
    (b) Runs: sequential paint runs with ``tasks_when_trained``; a pair is (run, earlier task):
    its accuracy when trained vs its final accuracy, for every task but the last trained (in
    ``task_order``, not the keys' order). PASS: the final accuracy is strictly lower on more than
    half of the pairs.
    Both: NOT ENOUGH RUNS below 3 pairs; p is the one-sided Wilcoxon test of before > after.
    """
    paint = [r for r in runs if r.method == "paint"]
    base = [r for r in paint if number(r.results.get("base_acc_before")) is not None
            and number(r.results.get("base_acc_after")) is not None]
    pairs = pair(_items(base, lambda r: r.results["base_acc_before"], lambda r: r.path),
                 _items(base, lambda r: r.results["base_acc_after"], lambda r: r.path))
    out = [paired_verdict("PAINT's chosen α costs base accuracy", "after < before on more than half of the runs",
                          pairs, "base acc before", "after", most_pairs_positive)]
    earlier_a, earlier_b = [], []
    for r in paint:
        when, final = r.results.get("tasks_when_trained") or {}, r.results.get("tasks") or {}
        if r.scenario != "sequential" or not when:
            continue
        for t in task_names(r.results, "tasks_when_trained")[:-1]:  # the last one: when trained = final
            earlier_a.append((cell(r, t, r.path), r.seed, when[t]))
            earlier_b.append((cell(r, t, r.path), r.seed, final.get(t)))
    out.append(paired_verdict("PAINT's sequential chain lowers earlier tasks",
                              "final < when trained on more than half of the (run, earlier task) pairs",
                              pair(earlier_a, earlier_b), "when trained", "final", most_pairs_positive))
    return out


# ------------------------------------------------------------------------------ 3. ∆ vs PAINT
def _delta_vs_paint(runs: Sequence[Run], paint_value: Callable[[Run, str], Any], versus: str, paint_name: str,
                    scenarios: Iterable[str] = tuple(AGGREGATES)) -> list[Verdict]:
    """One "∆(n) ≥ ``versus``" verdict per scenario and n_deltas found: ∆ runs scored by the
    scenario's aggregate, PAINT runs (``paint_name`` in the numbers) by ``paint_value(run,
    aggregate)``; pairs by (cell, seed)."""
    out = []
    for scenario in scenarios:
        agg = AGGREGATES[scenario]
        here = [r for r in runs if r.scenario == scenario]
        paint = [r for r in here if r.method == "paint"]
        ns = sorted({r.n_deltas for r in here if r.method == "delta" and r.n_deltas is not None})
        for n in ns or [None]:
            delta = [r for r in here if r.method == "delta" and r.n_deltas == n]
            pairs = pair(_items(delta, lambda r: metric_value(r, agg)), _items(paint, lambda r: paint_value(r, agg)))
            label = f"∆({n})" if n is not None else "∆"
            out.append(paired_verdict(f"{label} {agg} ≥ {versus} on most cells ({scenario})",
                                      f"mean {label} − {paint_name} over seeds ≥ 0 in more than half of the cells",
                                      pairs, label, paint_name, most_cells_at_least_zero))
    return out


def claim_delta_beats_paint(runs: Sequence[Run]) -> list[Verdict]:
    """∆-Networks ≥ PAINT: hmean on most cells of the single scenario (Table 2's twin) and of the
    joint scenario (Table 3's twin), mean accuracy on most cells of the sequential scenario
    (Table 4's twin).

    One verdict per scenario and n_deltas found. Runs: method delta with that n_deltas, method
    paint; scored by the scenario's aggregate (hmean for single and joint, mean for sequential). A cell:
    experiment · scenario · backbone · column (variant); pairs by seed. PASS: in more than half
    of the cells, the mean over seeds of ∆(n) − PAINT is ≥ 0. NOT ENOUGH RUNS below 3 pairs.
    """
    return _delta_vs_paint(runs, metric_value, "PAINT's", "PAINT")


def paint_best_on_test(run: Run, agg: str) -> float | None:
    """The best test ``agg`` over a PAINT run's final α sweep, or None unless every α of it was
    scored on test by that aggregate (``test_sweep=true``, as ``real/table10_11`` runs it)."""
    found = final_sweep(run)
    if found is None or found[1] != agg:
        return None
    values = [number((row.get("test") or {}).get(agg)) for row in found[0]]
    return max(values) if values and None not in values else None


def claim_delta_beats_paint_best_alpha(runs: Sequence[Run]) -> list[Verdict]:
    """∆-Networks ≥ PAINT even at the α that is best on test: could ∆'s lead come from α being
    chosen on a small validation split? PAINT's number is an oracle no run may use (α is chosen
    on validation), PAINT's upper bound over its α grid, not a result.

    Runs and cells as :func:`claim_delta_beats_paint`, in the cells where some PAINT run scored
    every α of its sweep on test (Tables 10/11's twin); PAINT scored by
    :func:`paint_best_on_test`. PASS: in more than half of the cells, the mean over seeds of
    ∆(n) − PAINT's best is ≥ 0. NOT ENOUGH RUNS below 3 pairs, or (one verdict) no such PAINT run.
    """
    swept = {cell(r) for r in runs if r.method == "paint" and r.scenario in AGGREGATES
             and paint_best_on_test(r, AGGREGATES[r.scenario]) is not None}
    if not swept:
        return [Verdict("∆ ≥ PAINT at its best α on test", NOT_ENOUGH, "needs PAINT runs with test_sweep=true",
                        {"summary": "no PAINT run scored its whole α sweep on test"}, [])]
    here = [r for r in runs if cell(r) in swept]  # only ∆ runs in a cell with such a PAINT run are paired
    scenarios = [s for s in AGGREGATES if any(r.scenario == s for r in here)]
    return _delta_vs_paint(here, paint_best_on_test, "PAINT at its best α on test", "PAINT best α on test", scenarios)


# ------------------------------------------------------------------------------ 4. Table 8
TABLE8_PAIRS = [
    ("delta", "all_skips_learnable", "input-conditioned skips ≥ static learnable skips"),
    ("delta", "random_lambda", "input-conditioned skips ≥ random λ"),
    ("all_skips", "all_skips_nobn", "BN helps: All Skips + BN ≥ All Skips"),
    ("all_skips_learnable", "all_skips_learnable_nobn", "BN helps: All Skips (Learnable) + BN ≥ without BN"),
    ("random_lambda", "random_lambda_nobn", "BN helps: All Skips + BN + Random ≥ without BN"),
]


def claim_table8(runs: Sequence[Run]) -> list[Verdict]:
    """Table 8's ablations: input-conditioned skips (delta) ≥ static learnable skips
    (all_skips_learnable) and ≥ random λ (random_lambda); BN helps the all-skips rows (all_skips,
    all_skips_learnable, random_lambda each ≥ its _nobn twin).

    Runs: the two methods compared, scored by the run's metric (hmean for single). A cell:
    experiment · scenario · backbone · column (variant) · n_deltas; pairs by seed. PASS: the mean
    paired difference over all pairs is ≥ 0. NOT ENOUGH RUNS below 3 pairs.
    """
    out = []
    for a, b, claim in TABLE8_PAIRS:
        pairs = pair(_items([r for r in runs if r.method == a], metric_value, _n),
                     _items([r for r in runs if r.method == b], metric_value, _n))
        out.append(paired_verdict(claim, f"mean {a} − {b} over all (cell, seed) pairs ≥ 0", pairs, a, b,
                                  mean_diff_at_least_zero))
    return out


# ------------------------------------------------------------------------------ 5. ∆(4) vs ∆(1)
def task_val_acc(run: Run) -> float | None:
    """Mean validation accuracy over the run's tasks (the base task left out)."""
    val, tasks = run.results.get("val") or {}, run.results.get("tasks") or {}
    vals = [v for v in (number(val.get(t)) for t in tasks) if v is not None]
    return sum(vals) / len(vals) if vals else None


def harder_cells(runs: Sequence[Run]) -> tuple[set[str], str]:
    """The cells (experiment · scenario · backbone · column (variant)) with both ∆(4) and ∆(1)
    runs whose tasks are harder than the median such cell, and which runs said so.

    Difficulty is the validation accuracy of the FC-only runs (method fc) on the cell's tasks,
    averaged over seeds: a row that is not compared, on a split the claim does not score, so
    picking the cells cannot favour either compared row. When a cell lacks FC runs, every cell
    uses ∆(1)'s validation accuracy instead (one scale for all; named in the output: a seed where
    ∆(1) trains badly lowers its validation and its test accuracy alike, which can favour ∆(4)).
    Harder = strictly below the median over the cells (none with fewer than two cells).
    """
    def val_by_cell(rows: Iterable[Run]) -> dict[str, float]:
        accs: dict[str, list[float]] = {}
        for r in rows:
            if (acc := task_val_acc(r)) is not None:
                accs.setdefault(cell(r), []).append(acc)
        return {c: sum(v) / len(v) for c, v in accs.items()}

    delta = [r for r in runs if r.method == "delta"]
    both = {cell(r) for r in delta if r.n_deltas == 4} & {cell(r) for r in delta if r.n_deltas == 1}
    fc = val_by_cell(r for r in runs if r.method == "fc")
    source, by = ("FC-only", fc) if both and both <= set(fc) else \
        ("∆(1)", val_by_cell(r for r in delta if r.n_deltas == 1))
    difficulty = {c: by[c] for c in both if c in by}
    if len(difficulty) < 2:
        return set(), source
    median = statistics.median(difficulty.values())
    return {c for c, d in difficulty.items() if d < median}, source


def claim_more_deltas_on_harder_tasks(runs: Sequence[Run]) -> list[Verdict]:
    """∆(4) ≥ ∆(1) on harder tasks.

    Runs: method delta with n_deltas 4 and 1 in the single, joint and sequential scenarios,
    scored by their aggregate (hmean / mean). Harder cells: see :func:`harder_cells` (validation
    accuracy of FC-only, else ∆(1), below the median cell). Pairs by seed in the harder cells.
    PASS: the mean paired difference ∆(4) − ∆(1) over those pairs is ≥ 0. NOT ENOUGH RUNS below 3
    pairs (also when fewer than two cells have a difficulty).
    """
    scope = [r for r in runs if r.scenario in ("single", "joint", "sequential")]
    hard, source = harder_cells(scope)
    delta = [r for r in scope if r.method == "delta" and cell(r) in hard]
    pairs = pair(_items([r for r in delta if r.n_deltas == 4], metric_value),
                 _items([r for r in delta if r.n_deltas == 1], metric_value))
    note = f"harder cells ({len(hard)}, by {source} validation accuracy): {', '.join(sorted(hard)) or 'none'}"
    return [paired_verdict("∆(4) ≥ ∆(1) on harder tasks", "mean ∆(4) − ∆(1) over the harder cells' pairs ≥ 0",
                           pairs, "∆(4)", "∆(1)", mean_diff_at_least_zero, note=note)]


# ------------------------------------------------------------------------------ 6. transfer
def _rate(r: Run) -> float | None:
    return number(r.results.get("sample_rate")) if r.results.get("sample_rate") is not None else \
        number(r.cfg("dataset.sample_rate"))


def claim_transfer(runs: Sequence[Run]) -> list[Verdict]:
    """Transfer (Table 5's twin): fine-tuning + ∆(4) ≥ fine-tuning at low sample rates.

    Runs: scenario transfer, method finetune_delta with n_deltas 4 and method finetune, sample
    rate ≤ 0.3, scored by ``target_acc``. A cell: experiment · backbone · dataset and sample rate
    (the column); pairs by seed. PASS: the mean paired difference is ≥ 0. NOT ENOUGH RUNS below 3
    pairs.
    """
    low = [r for r in runs if r.scenario == "transfer" and (rate := _rate(r)) is not None and rate <= HARD_SAMPLE_RATE]
    pairs = pair(_items([r for r in low if r.method == "finetune_delta" and r.n_deltas == 4], metric_value),
                 _items([r for r in low if r.method == "finetune"], metric_value))
    return [paired_verdict(f"transfer: fine-tuning + ∆(4) ≥ fine-tuning at sample rates ≤ {HARD_SAMPLE_RATE:g}",
                           "mean paired difference ≥ 0", pairs, "finetune + ∆(4)", "finetune",
                           mean_diff_at_least_zero)]


# ------------------------------------------------------------------------------ 7. ZSDA
def _prior(r: Run) -> bool:
    up = r.results.get("uniform_prior")
    return isinstance(up, dict) and (number(up.get("weight")) or 0.0) > 0


def _vanilla_target(r: Run) -> float | None:
    van = r.results.get("vanilla")
    return number(van.get("target_acc")) if isinstance(van, dict) else None


def _zsda_cell(r: Run) -> str:  # the prior and ADDA are compared across runs: not part of the cell
    return " · ".join(map(str, (r.experiment, r.backbone, f"{r.results.get('dataset')}→{r.results.get('target')}")))


ZSDA_DELTA = {"delta": "on_top", "finetune_delta": "joint"}  # method -> the reading of "+∆-Networks"


def claim_zsda(runs: Sequence[Run]) -> list[Verdict]:
    """Zero-shot domain adaptation (Table 6's twin): ∆(4) helps on the target, on top of each model.

    One set of verdicts per reading of "+∆-Networks (4)" found (docs/zsda.md): ``on_top`` (method
    delta: ∆ trained on the labelled source on the frozen starting model) and ``joint`` (method
    finetune_delta: the ∆ network trained as the vanilla model is). Runs: scenario zsda, that
    method, n_deltas 4. Within a run, ``target_acc`` (the ∆ row) is paired with
    ``vanilla.target_acc`` (the model it is compared with), for four kinds of run: plain
    ("+∆(4) ≥ vanilla"), uniform prior (``uniform_prior.weight > 0``), ADDA (``adda: true``; absent
    = false) and ADDA + prior. Across runs, "+∆(4) ≥ uniform prior alone" pairs a plain run's
    ``target_acc`` with ``vanilla.target_acc`` of the prior run of the same experiment, backbone,
    source, target and seed. PASS: the mean paired difference is ≥ 0. NOT ENOUGH RUNS below 3
    pairs. Every number here is a target test accuracy read from results.json; the runner selects
    nothing on target data.
    """
    out = []
    found = [m for m in ZSDA_DELTA if any(r.scenario == "zsda" and r.method == m for r in runs)] or ["delta"]
    for method in found:
        out += _zsda_verdicts(runs, method, "" if method == "delta" else f" ({ZSDA_DELTA[method]})")
    return out


def _zsda_verdicts(runs: Sequence[Run], method: str, tag: str) -> list[Verdict]:
    zsda = [r for r in runs if r.scenario == "zsda" and r.method == method and r.n_deltas == 4]
    out = []
    for adda, prior, name in ((False, False, "vanilla"), (False, True, "uniform prior"), (True, False, "ADDA"),
                              (True, True, "ADDA + uniform prior")):
        kind = [r for r in zsda if bool(r.results.get("adda")) == adda and _prior(r) == prior]
        a = [(_zsda_cell(r), r.seed, number(r.results.get("target_acc"))) for r in kind]
        b = [(_zsda_cell(r), r.seed, _vanilla_target(r)) for r in kind]
        out.append(paired_verdict(f"zsda{tag}: {name} + ∆(4) ≥ {name}", "mean paired difference (same run) ≥ 0",
                                  pair(a, b), f"{name} + ∆(4)", name, mean_diff_at_least_zero))
    plain = [r for r in zsda if not r.results.get("adda") and not _prior(r)]
    with_prior = [r for r in runs if r.scenario == "zsda" and not r.results.get("adda") and _prior(r)
                  and r.method != "target_only"]
    pairs = pair([(_zsda_cell(r), r.seed, number(r.results.get("target_acc"))) for r in plain],
                 [(_zsda_cell(r), r.seed, _vanilla_target(r)) for r in with_prior])
    out.append(paired_verdict(f"zsda{tag}: +∆(4) ≥ uniform prior alone", "mean paired difference (same seed) ≥ 0",
                              pairs, "+∆(4)", "uniform prior", mean_diff_at_least_zero))
    return out


CLAIMS = [claim_delta_keeps_base, claim_paint_costs_base, claim_delta_beats_paint, claim_delta_beats_paint_best_alpha,
          claim_table8, claim_more_deltas_on_harder_tasks, claim_transfer, claim_zsda]


def check_claims(runs: Sequence[Run]) -> list[Verdict]:
    """Every claim's verdicts, in the order of :data:`CLAIMS`. Pass runs loaded without derived
    rows (``load_runs(..., derived=False)``): a zsda run's vanilla model is read from the run."""
    return [v for claim in CLAIMS for v in claim(runs)]


__all__ = ["CLAIMS", "DELTA_FAMILY", "check_claims", "claim_delta_beats_paint", "claim_delta_beats_paint_best_alpha",
           "claim_delta_keeps_base", "claim_more_deltas_on_harder_tasks", "claim_paint_costs_base", "claim_table8",
           "claim_transfer", "claim_zsda", "harder_cells", "paint_best_on_test"]
