"""The claims check on a small synthetic set of results.json files whose answers are known: PASS,
FAIL and NOT ENOUGH RUNS cases, each rule's edge (most cells vs the mean), the harder-task split,
the Wilcoxon p-value against scipy on the same numbers, and the command's exit codes and JSON."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from scipy.stats import wilcoxon

from deltapatch.reporting.claims import check_claims, harder_cells
from deltapatch.reporting.runs import load_runs
from deltapatch.reporting.verdicts import FAIL, NOT_ENOUGH, PASS

from helpers import ROOT

SEEDS = (0, 1, 2)
# single scenario: per dataset, ∆(1), ∆(4), PAINT hmeans per seed and FC's validation accuracy
DELTA1 = {"d1": [60.0, 62.0, 61.0], "d2": [80.0, 81.0, 79.0], "d3": [90.0, 91.0, 92.0]}
DELTA4 = {"d1": [63.0, 64.0, 63.5], "d2": [79.0, 80.0, 81.0], "d3": [85.0, 86.0, 87.0]}
PAINT = {"d1": [50.0, 52.0, 54.0], "d2": [70.0, 71.0, 69.5], "d3": [95.0, 96.0, 97.0]}
FC_VAL = {"d1": 40.0, "d2": 70.0, "d3": 88.0}  # d1 is the one harder than the median (70)


def _write(root: Path, name: str, **res) -> None:
    d = root / name
    d.mkdir(parents=True)
    base = {"backbone": "resnet18", "scenario": "single", "experiment": "t", "tasks": {"patch": 0.0},
            "trainable_params": {}, "base_model_unchanged": True}
    (d / "results.json").write_text(json.dumps(base | res))


def _synthetic(root: Path) -> Path:
    for ds in DELTA1:
        for i, seed in enumerate(SEEDS):
            common = {"dataset": ds, "seed": seed}
            for n, table in ((1, DELTA1), (4, DELTA4)):
                _write(root, f"delta{n}_{ds}_{seed}", method="delta", n_deltas=n, hmean=table[ds][i],
                       base_acc_before=90.0, base_acc_after=90.0, val={"base": 90.0, "patch": 99.0}, **common)
            # PAINT: base accuracy drops on two runs of three per dataset, is kept on the third
            _write(root, f"paint_{ds}_{seed}", method="paint", n_deltas=1, hmean=PAINT[ds][i],
                   base_acc_before=90.0, base_acc_after=90.0 if seed == 2 else 85.0 - i, **common)
            _write(root, f"fc_{ds}_{seed}", method="fc", n_deltas=None, hmean=50.0, **common,
                   val={"base": 90.0, "patch": FC_VAL[ds] + seed})  # the base's validation is left out
            # Table 8: static learnable skips beat input-conditioned ones here (a FAIL)
            _write(root, f"static_{ds}_{seed}", method="all_skips_learnable", n_deltas=1,
                   hmean=DELTA1[ds][i] + 1.0, base_acc_before=90.0, base_acc_after=90.0, **common)
    # zsda: ∆(4) on the vanilla model and on the prior model; the prior alone is better than +∆(4)
    for seed, (acc, van, prior_van) in enumerate([(55.0, 50.0, 58.0), (57.0, 51.0, 59.0), (54.0, 52.0, 57.5)]):
        common = {"scenario": "zsda", "dataset": "mnist", "target": "usps", "seed": seed, "method": "delta",
                  "n_deltas": 4, "metric": "target_acc"}
        _write(root, f"zsda_{seed}", target_acc=acc, vanilla={"source_acc": 99.0, "target_acc": van},
               uniform_prior={"weight": 0.0, "t": 1.0}, adda=False, **common)
        _write(root, f"zsda_prior_{seed}", target_acc=prior_van + 1.0,  # no adda key: false
               vanilla={"source_acc": 99.0, "target_acc": prior_van}, uniform_prior={"weight": 0.1, "t": 1.0}, **common)
    return root


def _by_claim(root: Path) -> dict:
    return {v.claim: v for v in check_claims(load_runs(root, derived=False))}


@pytest.fixture(scope="module")
def verdicts(tmp_path_factory) -> dict:
    return _by_claim(_synthetic(tmp_path_factory.mktemp("claims")))


def _diffs(a: dict, b: dict) -> list[float]:
    return [x - y for ds in a for x, y in zip(a[ds], b[ds])]


def test_delta_vs_paint_most_cells(verdicts):
    one = verdicts["∆(1) hmean ≥ PAINT's on most cells (single)"]
    assert one.verdict == PASS  # d1, d2 up, d3 down: 2 of 3 cells
    diffs = _diffs(DELTA1, PAINT)
    assert one.numbers["n_pairs"] == 9 and one.numbers["n_cells"] == 3
    assert one.numbers["diff_stat"]["mean"] == pytest.approx(sum(diffs) / 9)
    assert (one.numbers["positive"], one.numbers["negative"]) == (6, 3)
    assert one.numbers["p"] == pytest.approx(wilcoxon(diffs, alternative="greater").pvalue)
    four = verdicts["∆(4) hmean ≥ PAINT's on most cells (single)"]
    assert four.verdict == PASS
    assert verdicts["∆ mean ≥ PAINT's on most cells (sequential)"].verdict == NOT_ENOUGH  # no sequential runs
    assert verdicts["∆ hmean ≥ PAINT's on most cells (joint)"].verdict == NOT_ENOUGH  # no joint runs


@pytest.mark.parametrize("paint_c, expected", [(60.0, PASS), (80.0, FAIL)])
def test_delta_vs_paint_joint_cells(tmp_path, paint_c, expected):
    """Table 3's twin: a joint run's cell is its task set (task_order joined), scored by hmean.
    ∆(4) wins the a-b set and loses b-c; the x-y set decides the verdict (PAINT at 60 or 80)."""
    cells = (("a", "b"), 75.0, 70.0), (("b", "c"), 70.0, 72.0), (("x", "y"), 70.0, paint_c)
    for names, delta, paint in cells:
        tasks = {t: 50.0 for t in names}
        for seed in SEEDS:
            for method, h in (("delta", delta), ("paint", paint)):
                _write(tmp_path, f"{method}_{'-'.join(names)}_{seed}", method=method, n_deltas=4, seed=seed,
                       scenario="joint", dataset=names[0], tasks=tasks, task_order=list(names), hmean=h + seed)
    v = _by_claim(tmp_path)["∆(4) hmean ≥ PAINT's on most cells (joint)"]
    assert v.numbers["n_cells"] == 3 and v.numbers["n_pairs"] == 9
    assert v.verdict == expected


def _sweep(chosen: float, best: float, on_test: bool) -> list[dict]:
    """A PAINT α sweep (as results.json's extra.<task>.alpha_sweep) whose validation picks α 0.5,
    whose test hmean there is ``chosen`` and peaks at ``best`` on α 0.7 (test only at 0.5 unless
    ``on_test``: test_sweep=false)."""
    rows = []
    for alpha, val, test in ((0.3, 60.0, chosen - 5), (0.5, 70.0, chosen), (0.7, 65.0, best)):
        row = {"alpha": alpha, "val": {"hmean": val}}
        if on_test or alpha == 0.5:
            row["test"] = {"hmean": test}
        rows.append(row)
    return rows


def test_delta_vs_paint_at_its_best_alpha_on_test(tmp_path):
    """Tables 10/11's twin: PAINT's best test hmean over α (an oracle) against ∆(1). At the chosen
    α, ∆(1) wins d1 and d2 (PASS); at PAINT's best α on test, only d1 (FAIL). A run without the
    test sweep cannot say its best α and is left out of the pairs; ∆(4) runs of another preset,
    with no swept PAINT run in their cells, get no verdict."""
    for ds in ("d1", "d2", "d3"):
        for i, seed in enumerate(SEEDS):
            common = {"dataset": ds, "seed": seed}
            _write(tmp_path, f"delta_{ds}_{seed}", method="delta", n_deltas=1, hmean=DELTA1[ds][i], **common)
            _write(tmp_path, f"other_{ds}_{seed}", method="delta", n_deltas=4, hmean=DELTA4[ds][i], **common,
                   experiment="another preset")  # no swept PAINT beside it: no verdict
            best = DELTA1[ds][i] + (-1.0 if ds == "d1" else 2.0)
            _write(tmp_path, f"paint_{ds}_{seed}", method="paint", hmean=PAINT[ds][i], **common,
                   extra={"patch": {"alpha": 0.5, "selection": "hmean",
                                    "alpha_sweep": _sweep(PAINT[ds][i], best, on_test=seed != 2 or ds != "d1")}})
    verdicts = _by_claim(tmp_path)
    assert verdicts["∆(1) hmean ≥ PAINT's on most cells (single)"].verdict == PASS
    oracle = verdicts["∆(1) hmean ≥ PAINT at its best α on test on most cells (single)"]
    assert oracle.verdict == FAIL and (oracle.numbers["n_pairs"], oracle.numbers["n_cells"]) == (8, 3)
    best = [max(PAINT[ds][i], DELTA1[ds][i] + (-1.0 if ds == "d1" else 2.0))  # the sweep's peak is one of its rows
            for ds in DELTA1 for i in range(3) if (ds, i) != ("d1", 2)]
    assert oracle.numbers["b_stat"]["mean"] == pytest.approx(sum(best) / 8)
    assert (oracle.numbers["positive"], oracle.numbers["negative"]) == (2, 6)
    assert [c for c in verdicts if "best α on test" in c] == [oracle.claim]


def test_delta_vs_paint_at_best_alpha_needs_a_test_sweep(verdicts):
    """The synthetic set's PAINT runs have no α sweep: one NOT ENOUGH RUNS line, no per-scenario ones."""
    oracle = [v for c, v in verdicts.items() if "best α on test" in c]
    assert [v.verdict for v in oracle] == [NOT_ENOUGH]


def test_most_cells_is_not_the_mean(tmp_path):
    """One cell far ahead, two slightly behind: the mean difference is positive, yet ∆ ≥ PAINT on
    only one cell of three, so "most cells" fails."""
    for ds, delta, paint in (("a", 90.0, 70.0), ("b", 70.0, 71.0), ("c", 70.0, 71.0)):
        for seed in SEEDS:
            _write(tmp_path, f"d_{ds}_{seed}", method="delta", n_deltas=2, dataset=ds, seed=seed, hmean=delta)
            _write(tmp_path, f"p_{ds}_{seed}", method="paint", n_deltas=None, dataset=ds, seed=seed, hmean=paint)
    v = _by_claim(tmp_path)["∆(2) hmean ≥ PAINT's on most cells (single)"]
    assert v.numbers["diff_stat"]["mean"] > 0 and v.verdict == FAIL


def test_runs_on_two_bases_never_pair(tmp_path):
    """A base rebuilt under the same cache key can come out with other weights: ∆(1) on one build and
    PAINT on the other are not a pair (results.json's base_fingerprint differs), while runs on one
    build pair as before. Here ∆(1) beats PAINT on base A and loses on base B, and a PAINT run of
    base B at each seed would flip the verdict if it were paired with base A's ∆(1)."""
    for seed in SEEDS:
        common = {"dataset": "d", "seed": seed}
        _write(tmp_path, f"delta_a_{seed}", method="delta", n_deltas=1, hmean=70.0, base_fingerprint="a" * 64, **common)
        _write(tmp_path, f"paint_a_{seed}", method="paint", hmean=60.0, base_fingerprint="a" * 64, **common)
        _write(tmp_path, f"paint_b_{seed}", method="paint", hmean=80.0, base_fingerprint="b" * 64, **common)
    v = _by_claim(tmp_path)["∆(1) hmean ≥ PAINT's on most cells (single)"]
    assert (v.numbers["n_pairs"], v.numbers["n_cells"]) == (3, 1)
    assert v.numbers["b_stat"]["mean"] == 60.0 and v.verdict == PASS
    # one more run per seed on base B: two cells now, one won and one lost (not "most")
    for seed in SEEDS:
        _write(tmp_path, f"delta_b_{seed}", method="delta", n_deltas=1, hmean=75.0, base_fingerprint="b" * 64,
               dataset="d", seed=seed)
    v = _by_claim(tmp_path)["∆(1) hmean ≥ PAINT's on most cells (single)"]
    assert (v.numbers["n_pairs"], v.numbers["n_cells"]) == (6, 2) and v.verdict == FAIL


def test_sequential_chain_follows_task_order(tmp_path):
    """results.json writes its tasks objects with sorted keys; the chain is read in task_order.
    Trained c → a → b: c and a (the earlier tasks) drop, b (last) is scored once. Read in key
    order (a, b, c) the pairs would be a (drop) and b (no change): 3 of 6, a FAIL."""
    for seed in SEEDS:
        _write(tmp_path, f"seq_{seed}", method="paint", scenario="sequential", dataset="a", seed=seed,
               task_order=["c", "a", "b"], tasks={"a": 60.0, "b": 80.0, "c": 50.0 + seed},
               tasks_when_trained={"a": 70.0, "b": 80.0, "c": 75.0})
    chain = _by_claim(tmp_path)["PAINT's sequential chain lowers earlier tasks"]
    assert chain.verdict == PASS
    assert (chain.numbers["n_pairs"], chain.numbers["positive"], chain.numbers["zero"]) == (6, 6, 0)
    assert chain.numbers["b_stat"]["mean"] == pytest.approx((60.0 * 3 + 50.0 + 51.0 + 52.0) / 6)


def test_base_kept_and_paint_costs(verdicts, tmp_path):
    kept = verdicts["∆ methods keep the base exactly"]
    assert kept.verdict == PASS and kept.numbers["runs"] == 3 * 3 * 3 + 6  # ∆(1), ∆(4), static, zsda
    cost = verdicts["PAINT's chosen α costs base accuracy"]
    assert cost.verdict == PASS and (cost.numbers["positive"], cost.numbers["zero"]) == (6, 3)
    # zero differences are dropped by the test (scipy's default), as by this check
    diffs = [90.0 - (85.0 - i) for _ in range(3) for i in range(2)] + [0.0] * 3
    assert cost.numbers["p"] == pytest.approx(wilcoxon(diffs, alternative="greater").pvalue)
    assert verdicts["PAINT's sequential chain lowers earlier tasks"].verdict == NOT_ENOUGH
    # one ∆ run whose base moved by a hair: FAIL, and the run is named
    _synthetic(tmp_path)
    _write(tmp_path, "broken", method="all_skips", n_deltas=1, dataset="d1", seed=0, hmean=1.0,
           base_acc_before=90.0, base_acc_after=89.99)
    broken = _by_claim(tmp_path)["∆ methods keep the base exactly"]
    assert broken.verdict == FAIL and [r["run"] for r in broken.rows] == [str(tmp_path / "broken")]


def test_table8_fails_when_static_skips_win(verdicts):
    v = verdicts["input-conditioned skips ≥ static learnable skips"]
    assert v.verdict == FAIL and v.numbers["n_pairs"] == 9
    assert v.numbers["diff_stat"]["mean"] == pytest.approx(-1.0) and v.numbers["diff_stat"]["std"] == pytest.approx(0.0)
    assert v.numbers["p"] > 0.5  # every difference negative: no support for "greater"
    assert verdicts["input-conditioned skips ≥ random λ"].verdict == NOT_ENOUGH
    assert verdicts["BN helps: All Skips + BN ≥ All Skips"].verdict == NOT_ENOUGH


def test_harder_tasks_come_from_fc_validation(verdicts, tmp_path):
    runs = load_runs(_synthetic(tmp_path), derived=False)
    hard, source = harder_cells(runs)
    assert source == "FC-only" and hard == {"t · single · resnet18 · d1"}
    v = verdicts["∆(4) ≥ ∆(1) on harder tasks"]
    # only d1's pairs: ∆(4) ahead there (on d3, which is easy, it is behind)
    assert v.verdict == PASS and v.numbers["n_pairs"] == 3
    d1 = [a - b for a, b in zip(DELTA4["d1"], DELTA1["d1"])]
    assert v.numbers["diff_stat"]["mean"] == pytest.approx(sum(d1) / 3)
    assert v.numbers["p"] == pytest.approx(wilcoxon(d1, alternative="greater").pvalue)


def test_zsda_and_transfer(verdicts):
    plain = verdicts["zsda: vanilla + ∆(4) ≥ vanilla"]
    assert plain.verdict == PASS and plain.numbers["a_stat"]["mean"] == pytest.approx((55 + 57 + 54) / 3)
    assert plain.numbers["b_stat"]["mean"] == pytest.approx(51.0)
    assert verdicts["zsda: uniform prior + ∆(4) ≥ uniform prior"].verdict == PASS
    alone = verdicts["zsda: +∆(4) ≥ uniform prior alone"]
    assert alone.verdict == FAIL  # the prior alone (vanilla of the prior runs) is ahead on every seed
    assert alone.numbers["diff_stat"]["mean"] == pytest.approx(((55 - 58) + (57 - 59) + (54 - 57.5)) / 3)
    assert verdicts["zsda: ADDA + ∆(4) ≥ ADDA"].verdict == NOT_ENOUGH
    assert verdicts["transfer: fine-tuning + ∆(4) ≥ fine-tuning at sample rates ≤ 0.3"].verdict == NOT_ENOUGH


def _script():
    spec = importlib.util.spec_from_file_location("claims_script", ROOT / "scripts" / "claims.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_command_reports_without_gating(tmp_path, capsys):
    script = _script()
    root = _synthetic(tmp_path / "runs")
    assert script.main([str(root), "--json"]) == 0  # FAIL verdicts do not change the exit code
    out = json.loads(capsys.readouterr().out)
    verdicts = {c["claim"]: c for c in out["claims"]}
    assert {c["verdict"] for c in out["claims"]} == {PASS, FAIL, NOT_ENOUGH}
    assert verdicts["input-conditioned skips ≥ static learnable skips"]["verdict"] == FAIL
    assert len(verdicts["∆(1) hmean ≥ PAINT's on most cells (single)"]["rows"]) == 9  # the pairs behind it
    assert script.main([str(root)]) == 0
    text = capsys.readouterr().out
    assert "NOT ENOUGH RUNS" in text and "Wilcoxon" in text
    (tmp_path / "empty").mkdir()
    for folder in (tmp_path / "empty", tmp_path / "missing"):
        with pytest.raises(SystemExit) as exit_info:
            script.main([str(folder)])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err
