"""Baselines and regression verdicts from result JSONs made here (no run, no network, no GPU)."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from scipy import stats as sps

from bench import compare
from bench.analysis import baseline
from bench.core import metrics

ROOT = Path(__file__).resolve().parent.parent
TRIPLES = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "task" / "triples.yaml").metric_list)
F1 = {"full": 0.90, "lora": 0.80, "prefix_tuning": 0.40}


def fake_record(out: Path, method: str, seed: int, *, f1: float, steps: int = 120, base_key: str = "b4se",
                cache_dir: str = ".cache/peftbench", train_time: float = 10.0, device: str = "cpu",
                transformers: str = "5.23.0") -> dict:
    """A successful result JSON in bench.run's shape, with a resolved config and a fingerprint."""
    config = {"model": {"name": "tiny_llama", "arch": {"hidden_size": 64}}, "task": {"name": "triples_synth"},
              "method": {"name": method, "lr": 0.005}, "train": {"steps": steps, "schedule": "cosine"},
              "seed": seed, "out_dir": str(out), "cache_dir": cache_dir,
              "eval": {"predictions": f"{out}/predictions.jsonl"}}
    return {
        "run_info": {"status": "success", "config": config, "config_hash": f"h{method}{steps}", "seed": seed,
                     "git_sha": "abc123", "git_dirty": False, "wall_time_s": train_time + 5},
        "train_info": {"final_loss": 0.3 - f1 / 10, "eval_loss": 0.35 - f1 / 10, "train_time_s": train_time,
                       "peak_mem_bytes": 600 * 2**20, "mem_kind": "cpu_peak_rss", "trainable_params": 1000,
                       "trainable_pct": 1.0, "adapter_bytes": 4000, "loss_curve": [3.0, 1.0]},
        "eval_info": {"f1_micro": f1, "f1_macro": f1 - 0.01, "precision": f1, "recall": f1, "exact_match": f1 / 2,
                      "parse_fail_rate": 0.05, "latency_ms_p50": 3.0},
        "task_info": {"name": "triples_synth", "primary_metric": "f1_micro", "metric_list": TRIPLES},
        "base_info": {"key": base_key, "build_time_s": 90.0, "source_metric": "f1_micro", "source_score": 0.96},
        "meta_info": {"versions": {"torch": "2.13.0+cpu", "transformers": transformers, "peft": "0.21.2"},
                      "device": device,
                      "gpu_name": "NVIDIA H100" if device.startswith("cuda") else None},
    }


def write_sweep(root: Path, seeds: tuple[int, ...] = (0,), *, spread: float = 0.0,
                shift: dict[str, float] | None = None, **kwargs) -> Path:
    """A sweep folder of fake runs: F1 = F1[method] + shift[method] + spread · (seed − mean seed)."""
    centre = sum(seeds) / len(seeds)
    for method, f1 in F1.items():
        for seed in seeds:
            out = root / "tiny_llama" / "triples_synth" / method / f"seed{seed}"
            out.mkdir(parents=True, exist_ok=True)
            value = f1 + (shift or {}).get(method, 0.0) + spread * (seed - centre)
            (out / "result.json").write_text(json.dumps(fake_record(out, method, seed, f1=value, **kwargs)))
    return root


def make_baseline(tmp_path: Path, sweep: Path) -> Path:
    """``bench.compare baseline`` of ``sweep``; returns the baseline file."""
    assert compare.main(["baseline", str(sweep), "--name", "fixture", "--out-dir", str(tmp_path / "baselines")]) == 0
    return tmp_path / "baselines" / "fixture.json"


def run_compare(sweep: Path, base: Path, capsys: pytest.CaptureFixture, *extra: str) -> tuple[int, str]:
    """Exit code and stdout of ``bench.compare compare``."""
    code = compare.main(["compare", str(sweep), "--baseline", str(base), *extra])
    return code, capsys.readouterr().out


def verdicts(out: str) -> dict[tuple[str, str], str]:
    """{(method, metric heading): verdict} from the Markdown table."""
    found = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 9 and cells[0] == "tiny_llama":
            found[(cells[2], cells[3].rstrip(" ↑↓"))] = cells[8].strip("*")
    return found


def test_self_compare_is_all_unchanged(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    sweep = write_sweep(tmp_path / "sweep")
    code, out = run_compare(sweep, make_baseline(tmp_path, sweep), capsys)
    found = verdicts(out)
    assert code == 0 and "**PASS**" in out
    assert set(found.values()) == {"unchanged"} and len(found) == len(F1) * 11     # 11 deterministic metrics
    assert not any(k[1] == "Train time (s)" for k in found)                        # noisy: not judged by default


def test_baseline_is_compact_and_round_trips(tmp_path: Path) -> None:
    sweep = write_sweep(tmp_path / "sweep", seeds=(0, 1, 2), spread=0.01)
    doc = json.loads(make_baseline(tmp_path, sweep).read_text())
    assert doc["directions"]["parse_fail_rate"] == "lower" and doc["directions"]["f1_micro"] == "higher"
    assert doc["fingerprint"]["base_key"] == "b4se" and doc["fingerprint"]["versions"]["torch"] == "2.13.0+cpu"
    assert doc["config"]["train.steps"] == 120 and "seed" not in doc["config"] and "cache_dir" not in doc["config"]
    lora = next(e for e in doc["entries"] if e["method"] == "lora")
    assert lora["config"] == {"method.name": "lora"} and lora["fingerprint"] == {"config_hash": "hlora120"}
    assert lora["seeds"] == [0, 1, 2] and lora["metrics"]["f1_micro"]["n"] == 3
    assert lora["metrics"]["f1_micro"]["mean"] == pytest.approx(0.80)
    assert lora["metrics"]["f1_micro"]["std"] == pytest.approx(0.01)
    assert baseline.unpack(doc) == baseline.summarize_sweep(sweep)


def test_lowered_f1_beyond_tolerance_regresses(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    base = make_baseline(tmp_path, write_sweep(tmp_path / "before"))
    code, out = run_compare(write_sweep(tmp_path / "after", shift={"lora": -0.02}), base, capsys)
    found = verdicts(out)
    assert code == 1 and "**FAIL**" in out
    assert found[("lora", "F1 micro")] == "regressed" and found[("full", "F1 micro")] == "unchanged"
    assert found[("lora", "Parse failures")] == "unchanged"
    assert "| -0.0200 |" in out


def test_raised_f1_is_improved_and_passes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    base = make_baseline(tmp_path, write_sweep(tmp_path / "before"))
    code, out = run_compare(write_sweep(tmp_path / "after", shift={"full": 0.03}), base, capsys)
    assert code == 0 and verdicts(out)[("full", "F1 micro")] == "improved"


def test_lowered_within_multi_seed_noise_is_unchanged(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    seeds = (0, 1, 2)
    base = make_baseline(tmp_path, write_sweep(tmp_path / "before", seeds, spread=0.05))
    code, out = run_compare(write_sweep(tmp_path / "after", seeds, spread=0.05, shift={"lora": -0.06}), base, capsys)
    assert code == 0 and verdicts(out)[("lora", "F1 micro")] == "unchanged"
    assert "(noise)" in out and "(n=3)" in out
    code, out = run_compare(write_sweep(tmp_path / "worse", seeds, spread=0.05, shift={"lora": -0.3}), base, capsys)
    assert code == 1 and verdicts(out)[("lora", "F1 micro")] == "regressed"


def test_floor_and_noise_rule() -> None:
    rules, cat = compare.load_rules(), metrics.catalog([TRIPLES])
    f1, fails = cat["f1_micro"], cat["parse_fail_rate"]
    one = {"mean": 0.8, "std": None, "n": 1}
    assert compare.floor_of(f1, one, rules) == pytest.approx(0.005)            # the task's declared floor
    p, rule = compare.noise_test(one, one)
    assert math.isnan(p) and rule == "tol"                                     # one seed a side: the floor alone
    exact = {"mean": 0.8, "std": 0.0, "n": 3}                                  # deterministic seeds: no spread
    assert math.isnan(compare.noise_test(exact, {**exact, "mean": 0.7})[0])
    three, lower = {"mean": 0.8, "std": 0.03, "n": 3}, {"mean": 0.7, "std": 0.03, "n": 3}
    p, rule = compare.noise_test(three, lower)
    assert rule == "noise" and p == pytest.approx(2 * sps.t.sf(0.1 / (0.03 * (2 / 3) ** 0.5), 4))   # Welch, df 4
    assert compare.noise_test(three, {"mean": 0.7, "std": None, "n": 1})[1] == "noise of the n=3 side"
    assert compare.judge(fails, +0.1, 0.005) == "regressed"        # direction declared by the task
    assert compare.judge(fails, -0.1, 0.005) == "improved"
    overridden = {**rules, "tolerance": {**rules["tolerance"], "f1_micro": {"abs": 0.02}}}
    assert compare.floor_of(f1, one, overridden) == pytest.approx(0.02)         # compare.yaml wins


def test_deterministic_rows_are_judged_by_the_floor_alone() -> None:
    """On CPU seeds agree exactly (std 0): no p-value, and a shift beyond the floor regresses whatever the table."""
    rows = compare.compare([entry("lora", {"f1_micro": (0.8, 0.0, 3)})], [entry("lora", {"f1_micro": (0.79, 0.0, 3)})],
                           compare.load_rules())
    assert rows[0].verdict == "regressed" and rows[0].rule == "tol" and math.isnan(rows[0].p)


def entry(method: str, stats: dict[str, tuple[float, float | None, int]]) -> dict:
    """A summarized entry (bench.analysis.baseline's shape) with {metric: (mean, std, n)}."""
    return {"model": "tiny_llama", "task": "triples_synth", "method": method, "task_metrics": TRIPLES,
            "metrics": {k: {"mean": m, "std": s, "n": n} for k, (m, s, n) in stats.items()}}


@pytest.mark.parametrize("correction, tested", [("none", 1), ("holm", 21)])
def test_one_seed_against_three_uses_the_measured_spread(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                         correction: str, tested: int) -> None:
    """n=1 against n=3 (spread s): t = delta / (s·sqrt(1/1 + 1/3)) on 2 df; the seven rows that move with F1 in each
    of three methods are tested (21), and Holm holds lora's seven identical p-values to alpha/21 first."""
    spread = 0.005
    rules = tmp_path / "rules.yaml"
    rules.write_text(OmegaConf.to_yaml({**compare.load_rules(), "correction": correction}))
    base = make_baseline(tmp_path, write_sweep(tmp_path / "before", (0, 1, 2), spread=spread))
    critical = sps.t.isf(0.05 / 2 / tested, 2) * spread * (1 + 1 / 3) ** 0.5   # 0.0248 (none), 0.118 (holm)
    for factor, expected, code_expected in ((0.8, "unchanged", 0), (1.2, "regressed", 1)):
        after = write_sweep(tmp_path / f"after{factor}", shift={"lora": -factor * critical})
        code, out = run_compare(after, base, capsys, "--rules", str(rules))
        assert verdicts(out)[("lora", "F1 micro")] == expected and code == code_expected, out
        assert "(noise of the n=3 side)" in out and f"over the {3 * 7} rows" in out


def test_holm_keeps_a_table_of_pure_noise_free_of_false_alarms() -> None:
    """50 entries whose seeds (n=3 a side) come from one distribution: some rows pass p < 0.05 by chance, and
    judged alone they would be called changed; Holm over the table calls none."""
    rng = np.random.default_rng(7)
    draws = rng.normal(0.8, 0.05, size=(50, 2, 3))           # entry, side, seed: no real shift anywhere
    sides = [[entry(f"m{i:02d}", {"f1_micro": (float(d.mean()), float(d.std(ddof=1)), 3)}) for i, d in
              enumerate(draws[:, side])] for side in (0, 1)]
    rules = compare.load_rules()
    alone = compare.compare(*sides, {**rules, "correction": "none"})
    holm = compare.compare(*sides, rules)
    chance = [r for r in alone if r.p <= 0.05]
    assert len(holm) == 50 and all(not math.isnan(r.p) for r in holm)
    assert len(chance) >= 1 and all(r.verdict != "unchanged" for r in chance)       # 2 false alarms, uncorrected
    assert all(r.verdict == "unchanged" for r in holm) and min(r.p_adj for r in holm) > 0.05
    bh = compare.compare(*sides, {**rules, "correction": "bh"})
    assert all(r.verdict == "unchanged" for r in bh)


def test_a_real_shift_still_shows_under_holm() -> None:
    """The correction is no blindfold: a shift of many standard errors on one of 50 noisy entries regresses."""
    rng = np.random.default_rng(7)
    draws = rng.normal(0.8, 0.05, size=(50, 2, 3))
    draws[10, 1] -= 0.5
    sides = [[entry(f"m{i:02d}", {"f1_micro": (float(d.mean()), float(d.std(ddof=1)), 3)}) for i, d in
              enumerate(draws[:, side])] for side in (0, 1)]
    rows = compare.compare(*sides, compare.load_rules())
    assert [r.entry[2] for r in rows if r.verdict != "unchanged"] == ["m10"] and rows[10].verdict == "regressed"


def test_one_seed_on_a_gpu_against_a_cpu_baseline_is_noted(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    base = make_baseline(tmp_path, write_sweep(tmp_path / "before"))
    code, out = run_compare(write_sweep(tmp_path / "gpu", device="cuda"), base, capsys)
    assert code == 0 and compare.GPU_NOTE in out and "(3 of 3 entries)" in out and "device: cpu → cuda" in out
    code, out = run_compare(write_sweep(tmp_path / "gpu3", (0, 1, 2), device="cuda"), base, capsys)
    assert compare.GPU_NOTE not in out                                          # three seeds measured their noise
    code, out = run_compare(write_sweep(tmp_path / "cpu"), base, capsys)
    assert code == 0 and compare.GPU_NOTE not in out


def test_bad_correction_is_refused_naming_the_field(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(OmegaConf.to_yaml({**compare.load_rules(), "correction": "bonferroni"}))
    with pytest.raises(ValueError, match="correction 'bonferroni' unknown; use one of holm, bh, none"):
        compare.load_rules(rules)


def test_config_mismatch_is_refused_naming_the_keys(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    base = make_baseline(tmp_path, write_sweep(tmp_path / "before"))
    after = write_sweep(tmp_path / "after", steps=200)
    with caplog.at_level(logging.ERROR):
        code, out = run_compare(after, base, capsys)
    assert code == 2 and out == ""
    assert "refusing" in caplog.text and "every entry (3): train.steps: 120 → 200" in caplog.text
    assert "out_dir" not in caplog.text and "predictions" not in caplog.text    # locations are not config
    path = write_sweep(tmp_path / "lr") / "tiny_llama/triples_synth/lora/seed0/result.json"
    record = json.loads(path.read_text())
    record["run_info"]["config"]["method"]["lr"] = 0.01
    path.write_text(json.dumps(record))
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        code, _ = run_compare(tmp_path / "lr", base, capsys)
    assert code == 2 and "tiny_llama/triples_synth/lora: method.lr: 0.005 → 0.01" in caplog.text
    assert "full" not in caplog.text


def test_force_compares_anyway_and_says_so(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    base = make_baseline(tmp_path, write_sweep(tmp_path / "before"))
    code, out = run_compare(write_sweep(tmp_path / "after", steps=200), base, capsys, "--force")
    assert code == 0 and "**forced**" in out and "train.steps: 120 → 200" in out


def test_base_key_mismatch_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture,
                                      caplog: pytest.LogCaptureFixture) -> None:
    base = make_baseline(tmp_path, write_sweep(tmp_path / "before"))
    with caplog.at_level(logging.ERROR):
        code, _ = run_compare(write_sweep(tmp_path / "after", base_key="0ther"), base, capsys)
    assert code == 2 and "base_info.key: b4se → 0ther" in caplog.text


def test_locations_and_noisy_figures_do_not_count(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    base = make_baseline(tmp_path, write_sweep(tmp_path / "before"))
    after = write_sweep(tmp_path / "elsewhere", cache_dir="/tmp/other-cache", train_time=30.0)
    code, out = run_compare(after, base, capsys)
    assert code == 0 and set(verdicts(out).values()) == {"unchanged"}
    code, out = run_compare(after, base, capsys, "--noisy")                  # 3× slower: beyond ±50 %
    assert code == 1 and verdicts(out)[("lora", "Train time (s)")] == "regressed"


def test_missing_method_fails_and_environment_changes_are_noted(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture) -> None:
    base = make_baseline(tmp_path, write_sweep(tmp_path / "before"))
    after = write_sweep(tmp_path / "after")
    record = json.loads((after / "tiny_llama/triples_synth/lora/seed0/result.json").read_text())
    record["run_info"]["status"] = "failed"
    for path in after.rglob("result.json"):
        other = json.loads(path.read_text())
        other["meta_info"]["versions"]["torch"] = "2.14.0+cpu"
        path.write_text(json.dumps(record if "lora" in str(path) else other))
    code, out = run_compare(after, base, capsys)
    assert code == 1 and "| lora | (all) |" in out and "**missing**" in out
    assert "the libraries changed: torch 2.13.0+cpu → 2.14.0+cpu" in out


def test_a_library_upgrade_is_named_as_such_not_as_another_config(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    """A newer transformers rebuilds the tiny base (its key covers the versions): the refusal names the libraries
    and the fix, not a bare key change; with the config changed as well, both are said."""
    base = make_baseline(tmp_path, write_sweep(tmp_path / "before"))
    upgraded = write_sweep(tmp_path / "upgraded", base_key="0ther", transformers="5.25.0")
    with caplog.at_level(logging.ERROR):
        code, out = run_compare(upgraded, base, capsys)
    assert code == 2 and out == ""
    assert "the libraries changed, not the config: transformers 5.23.0 → 5.25.0" in caplog.text
    assert "make setup" in caplog.text and "make lock" in caplog.text and "refusing" not in caplog.text
    caplog.clear()
    both = write_sweep(tmp_path / "both", base_key="0ther", transformers="5.25.0", steps=200)
    with caplog.at_level(logging.ERROR):
        code, _ = run_compare(both, base, capsys)
    assert code == 2 and "refusing to compare runs of different configs" in caplog.text
    assert "train.steps: 120 → 200" in caplog.text and "the libraries changed too: transformers 5.23.0 → 5.25.0" \
        in caplog.text
    code, out = run_compare(upgraded, base, capsys, "--force")     # judging the upgrade itself
    assert code == 0 and "the libraries changed: transformers 5.23.0 → 5.25.0" in out


def test_every_judged_metric_has_a_tolerance() -> None:
    rules = compare.load_rules()
    assert set(rules["tolerance"]) - {"default"} == set(metrics.BENCH)
    cat = metrics.catalog([TRIPLES])
    judged = compare.judged_metrics(rules, noisy=False, cat=cat)
    assert all(not m.noisy for m in judged) and all(m.floor for m in judged if m.key not in metrics.BENCH)
    assert [m.key for m in judged][:len(TRIPLES)] == [m["metric"] for m in TRIPLES]    # the task's first
