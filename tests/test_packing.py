"""train.packing: a micro-batch's records packed back to back train exactly as the same records unpacked."""

from __future__ import annotations

import json
import random
from pathlib import Path

import hydra
import pytest
import torch

from bench.core.errors import ConfigError
from bench.models import loading
from bench.pipeline import tinybase, validate
from bench.pipeline.losses import token_cross_entropy
from bench.run import execute
from bench.taskdata import encoding, splits
from tests.conftest import compose_cfg

SMALL = ["task.generator.n_train=64", "task.base_task.generator.n_train=64"]


def _model_and_examples(model: str, method: str) -> tuple[torch.nn.Module, list[dict], int]:
    """A random tiny model wrapped by ``method`` (no dropout: both layouts must draw nothing), the task's encoded
    records and its ``max_length``."""
    cfg = compose_cfg(f"model={model}", f"method={method}", "method.peft_config.lora_dropout=0.0", *SMALL) \
        if method == "lora" else compose_cfg(f"model={model}", f"method={method}", *SMALL)
    tokenizer, _ = tinybase.tokenizer_and_key(cfg)
    with torch.random.fork_rng(devices=[]):
        net = loading.build_tiny(cfg.model, len(tokenizer), seed=0, special=loading.special_ids(tokenizer))
        net = hydra.utils.get_method(cfg.method.builder)(net, cfg.method, cfg.model)
    examples = encoding.encode(splits.load(cfg.task, "train"), tokenizer, cfg.task)
    return net.float().train(), examples, int(cfg.task.max_length)


def _loss_and_grads(net: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, tuple, dict[str, torch.Tensor]]:
    """The model's own loss, the task's summed cross-entropy with its token count, and every trainable gradient."""
    net.zero_grad()
    out = net(**encoding.model_inputs(batch))
    out.loss.backward()
    scored = token_cross_entropy(out.logits.detach(), batch["labels"], shift=1)
    return out.loss.detach(), scored, {n: p.grad.clone() for n, p in net.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("model", ["tiny_llama", "tiny_glm"])
@pytest.mark.parametrize("method", ["full", "lora"])
def test_a_packed_batch_gives_the_unpacked_loss_and_gradients(model, method):
    net, examples, max_length = _model_and_examples(model, method)
    picked = sorted(range(len(examples)), key=lambda i: len(examples[i]["input_ids"]))
    batch = [examples[i] for i in picked[:: max(1, len(picked) // 12)][:12]]   # short to long
    assert len({len(e["input_ids"]) for e in batch}) > 6 and all(any(x != -100 for x in e["labels"]) for e in batch)
    lengths = [len(e["input_ids"]) for e in batch]
    rows = encoding.pack_rows(lengths, list(range(len(batch))), max_length)
    assert len(rows) < len(batch) and any(len(row) > 1 for row in rows)
    packed = encoding.collate_packed([[batch[i] for i in row] for row in rows], pad_id=0)
    loss, scored, grads = _loss_and_grads(net, encoding.collate(batch, pad_id=0))
    p_loss, p_scored, p_grads = _loss_and_grads(net, packed)
    assert int(scored[1]) == int(p_scored[1]) == sum(sum(x != -100 for x in e["labels"][1:]) for e in batch)
    torch.testing.assert_close(p_loss, loss, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(p_scored[0], scored[0], atol=1e-4, rtol=1e-5)
    assert grads.keys() == p_grads.keys() and grads
    for name, grad in grads.items():
        torch.testing.assert_close(p_grads[name], grad, atol=1e-5, rtol=1e-4, msg=lambda m, n=name: f"{n}: {m}")


def test_packed_rows_fit_and_hold_every_record_of_their_micro_batch():
    rng = random.Random(7)
    examples = [{"input_ids": [i + 1] * (n := rng.randint(3, 60)), "labels": [-100] * n, "widths": [n]}
                for i in range(200)]
    cap = 64
    packed = encoding.batches(examples, encoding.BatchPlan(16, seed=3, group_by_length=False, pack_to=cap), pad_id=0)
    plain = encoding.batches(examples, encoding.BatchPlan(16, seed=3, group_by_length=False), pad_id=0)
    seen = []
    for _ in range(-(-200 // 16)):   # one pass over the data
        batch, reference = next(packed), next(plain)
        assert batch["input_ids"].shape[1] <= cap
        records = []
        for ids, positions, mask in zip(batch["input_ids"], batch["position_ids"], batch["attention_mask"]):
            starts = [k for k in range(int(mask.sum())) if positions[k] == 0] + [int(mask.sum())]
            assert mask[: starts[-1]].all() and not mask[starts[-1]:].any()   # records first, then padding
            records += [tuple(ids[a:b].tolist()) for a, b in zip(starts, starts[1:])]
        whole = [tuple(row[: int(m.sum())].tolist()) for row, m in zip(reference["input_ids"],
                                                                       reference["attention_mask"])]
        assert sorted(records) == sorted(whole)   # the same records, none split, none dropped
        assert all(len(set(r)) == 1 for r in records)   # each a whole record (its tokens are its index)
        seen += records
    assert len(seen) == len(set(seen)) == 200   # one pass: every record once
    plan = encoding.BatchPlan(16, seed=3, pack_to=cap)
    assert encoding.pad_share(examples, plan) < encoding.pad_share(examples, encoding.BatchPlan(16, seed=3))
    assert 0 < encoding.packing(examples, plan)["rows_per_record"] < 1


def test_plan_packs_only_where_the_config_asks():
    train = compose_cfg("train.packing=true").train
    assert encoding.BatchPlan.of(train, seed=0, max_length=96).pack_to == 96
    assert encoding.BatchPlan.of(compose_cfg().train, seed=0, max_length=96).pack_to == 0
    with pytest.raises(ValueError, match="task.max_length"):
        encoding.BatchPlan.of(train, seed=0)


@pytest.mark.parametrize(("overrides", "message"), [
    (["method=prompt_tuning"], "prompt-learning config"),
    (["method=prefix_tuning"], "key/value prefixes"),
    (["model=tiny_t5"], "encoder–decoder"),
    (["model.attn_implementation=null"], "model.attn_implementation=null"),
    (["model.trust_remote_code=true"], "its attention mask"),
])
def test_packing_is_refused_where_records_would_not_stay_apart(cache_dir, overrides, message):
    cfg = compose_cfg("train.packing=true", f"cache_dir={cache_dir}", *overrides)
    with pytest.raises(ConfigError, match=message) as err:
        validate._packing(cfg)
    assert "set train.packing=false" in str(err.value)
    validate._packing(compose_cfg("train.packing=false", *overrides))   # unpacked, packing says nothing


def test_validation_refuses_packing_on_a_model_whose_attention_ignores_restarts():
    cfg = compose_cfg("train.packing=true")
    net = loading.build_tiny(cfg.model, vocab_size=64, seed=0)
    assert validate._leaks(net) is None
    validate.check(compose_cfg("train.packing=true", "model=tiny_glm"))   # the tiny GLM keeps records apart

    class Unaware(torch.nn.Module):   # a model that attends across the row, whatever its position ids say
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *, input_ids, position_ids=None, **kw):
            return self.inner(input_ids=input_ids, **kw)

    assert "does not keep packed records apart" in validate._leaks(Unaware(net))
    with pytest.raises(ConfigError, match="does not keep packed records apart"):
        validate.check_packed_attention(cfg, Unaware(net))


def test_a_packed_run_trains_as_the_unpacked_one_and_records_its_rows(tiny_cfg, tmp_path):
    common = ["method=lora", "method.peft_config.lora_dropout=0.0", "train.steps=6", "train.log_every=3",
              "eval.max_records=4", "eval.latency.records=2", "eval.latency.new_tokens=4", "forgetting.measure=none"]
    runs = {}
    for packing in (True, False):
        cfg = tiny_cfg(*common, f"train.packing={packing}", out=tmp_path / str(packing))
        assert execute(cfg) == 0
        runs[packing] = json.loads((Path(cfg.out_dir) / "result.json").read_text())["train_info"]
    packed, plain = runs[True], runs[False]
    assert packed["packing"] is True and plain["packing"] is False and plain["rows_per_record"] == 1.0
    assert 0 < packed["rows_per_record"] < 1 and packed["pad_share"] < plain["pad_share"]
    assert packed["tokens_per_s"] > 0 and packed["train_tokens"] == plain["train_tokens"]
    torch.testing.assert_close(packed["loss_curve"], plain["loss_curve"], atol=1e-4, rtol=1e-4)
