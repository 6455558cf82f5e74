"""Forgetting: the base's own ability before and after tuning, measured alike for every method."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import hydra
import pytest
import torch

from bench.analysis import plots, tables
from bench.core.errors import ConfigError
from bench.models import chartok, loading
from bench.pipeline import forgetting
from bench.run import execute
from tests.conftest import compose_cfg
from tests.test_report import fake_record

OTHER = "zzzz zzzz zzzz zzzz " * 16   # text the base is tuned on: nothing like the general text
NO_BASE = {"path": "somewhere", "key": None}   # base_info of a model without a tiny base


@pytest.fixture
def tiny():
    """A random tiny LlamaForCausalLM, its character tokenizer (the general text's characters and OTHER's), a config."""
    tokenizer = chartok.build([forgetting.general_text(), OTHER])
    cfg = compose_cfg("forgetting.measure=general_text", "forgetting.max_tokens=1024")
    model = loading.build_tiny(cfg.model, len(tokenizer), 0, loading.special_ids(tokenizer))
    return model, tokenizer, cfg


def test_auto_picks_the_source_task_exactly_where_the_base_has_one() -> None:
    cfg = compose_cfg()
    assert forgetting.measure(cfg.forgetting, {"key": "k", "source_task": "triples_synth_source"}) == "source_task"
    assert forgetting.measure(cfg.forgetting, NO_BASE) == "general_text"
    with pytest.raises(ConfigError, match="forgetting.measure='sometimes' must be one of"):
        forgetting.measure(compose_cfg("forgetting.measure=sometimes").forgetting, NO_BASE)
    with pytest.raises(ConfigError, match="needs a tiny base"):
        forgetting.measure(compose_cfg("forgetting.measure=source_task").forgetting, NO_BASE)


def test_windows_are_full_bos_led_and_capped(tiny) -> None:
    _, tokenizer, _ = tiny
    rows = forgetting.windows(tokenizer, forgetting.general_text(), window=128, max_tokens=1024)
    assert len(rows) == 1024 // 127 and {len(r) for r in rows} == {128}
    assert all(r[0] == tokenizer.bos_token_id and tokenizer.unk_token_id not in r for r in rows)
    assert len(forgetting.general_text().split()) > 3000          # the shipped text: ~4k words, header left out
    assert not forgetting.general_text().startswith("#")


def test_general_text_is_the_models_own_cross_entropy(tiny) -> None:
    model, tokenizer, cfg = tiny
    ability = forgetting.before(model, tokenizer, cfg, NO_BASE)
    rows = forgetting.windows(tokenizer, forgetting.general_text(), window=128, max_tokens=1024)
    with torch.no_grad():
        loss = model(input_ids=torch.tensor(rows), labels=torch.tensor(rows)).loss   # every window full: same weights
    assert ability["forgetting_measure"] == "general_text"
    assert ability["forgetting_before"] == pytest.approx(-float(loss), abs=1e-5)


def test_untrained_adapter_forgets_nothing_and_tuning_the_base_forgets(tiny) -> None:
    model, tokenizer, cfg = tiny
    mode = model.training
    ability = forgetting.before(model, tokenizer, cfg, NO_BASE)
    assert model.training is mode and next(model.parameters()).device.type == "cpu"   # left as it was
    adapted = hydra.utils.get_method(cfg.method.builder)(copy.deepcopy(model), cfg.method, cfg.model)   # LoRA, B = 0
    untouched = forgetting.after(adapted, tokenizer, cfg, NO_BASE, ability)
    assert untouched["forgetting"] == 0.0 and untouched["forgetting_after"] == ability["forgetting_before"]
    ids = torch.tensor([forgetting.windows(tokenizer, OTHER, window=64, max_tokens=64)[0]])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    model.train()
    for _ in range(5):   # the base's own weights, tuned on other text
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    tuned = forgetting.after(model, tokenizer, cfg, NO_BASE, ability)
    assert tuned["forgetting"] > 0.1, tuned
    assert tuned["forgetting"] == pytest.approx(tuned["forgetting_before"] - tuned["forgetting_after"])


def test_measure_none_records_the_keys_empty(tiny) -> None:
    model, tokenizer, _ = tiny
    cfg = compose_cfg("forgetting.measure=none")
    out = forgetting.after(model, tokenizer, cfg, NO_BASE, forgetting.before(model, tokenizer, cfg, NO_BASE))
    assert out == {"forgetting_measure": "none", "forgetting_before": None, "forgetting_after": None,
                   "forgetting": None}


def test_a_run_on_a_tiny_base_records_its_source_task_forgetting(tiny_cfg) -> None:
    cfg = tiny_cfg("method=full")
    assert execute(cfg) == 0
    result = json.loads((Path(cfg.out_dir) / "result.json").read_text())
    ev = result["eval_info"]
    assert ev["forgetting_measure"] == "source_task"
    assert ev["forgetting_before"] == result["base_info"]["source_score"]   # the base's score when it was built
    assert 0.0 <= ev["forgetting_after"] <= 1.0
    assert ev["forgetting"] == pytest.approx(ev["forgetting_before"] - ev["forgetting_after"])


# (forgetting, its std over seeds) per method, on fake_record's F1s (full 0.90, lora 0.80, prompt tuning 0.10).
FORGOT = {"full": 0.30, "lora": 0.05, "prompt_tuning": 0.01}


def write_sweep(root: Path) -> Path:
    """Two seeds of three methods whose result JSONs record forgetting on the source task."""
    for method, lost in FORGOT.items():
        for seed in (0, 1):
            record = fake_record(method, seed)
            after = 0.95 - lost - 0.01 * seed
            record["eval_info"].update(forgetting_measure="source_task", forgetting_before=0.95,
                                       forgetting_after=after, forgetting=0.95 - after)
            path = root / "tiny_llama" / "triples_synth" / method / f"seed{seed}" / "result.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(record))
    return root


def test_report_shows_forgetting_as_a_column_and_a_figure(tmp_path: Path) -> None:
    sweep = write_sweep(tmp_path / "sweep")
    runs = tables.load_runs(sweep)
    figs = plots.figures(runs)
    ax = figs["f1_micro_vs_forgetting-tiny_llama-triples_synth"].axes[0]
    methods = ["full", "prompt_tuning", "lora"]
    assert [c.get_label() for c in ax.containers] == methods                     # one point per method
    assert [c.lines[0].get_color() for c in ax.containers] == [plots.METHOD_COLORS[m] for m in methods]
    assert "Forgetting" in ax.get_xlabel() and "source_task" in ax.get_xlabel() and ax.get_xscale() == "linear"
    front = next(ln for ln in ax.get_lines() if ln.get_label() == "Pareto front")
    assert list(front.get_xdata()) == pytest.approx([0.015, 0.055, 0.305])      # all three trade F1 for forgetting
    written = tables.write_report(sweep)
    names = {p.name for p in (sweep / "report" / "figures").iterdir()}
    assert {"f1_micro_vs_forgetting-tiny_llama-triples_synth.png",
            "f1_micro_vs_forgetting-tiny_llama-triples_synth.pdf"} <= names
    md = written["table.md"].read_text()
    assert "| Forgetting ↓ |" in " ".join(md.split())
    lora = next(line for line in md.splitlines() if line.startswith("| lora"))
    assert "0.055 ± 0.007" in lora
    assert "**0.015 ± 0.007**" in md                                              # least forgetting is best
    assert "Forgetting: the base's ability before tuning minus after (the primary metric of the source task" in md
