"""Encoder–decoder models (tiny_t5, flan_t5_base): the family's data, loss and generation, refusals, and methods
through the real ``deepspeed`` launcher with their predictions reproduced from the saved weights.

The launched methods run as one shrunk ``sweep=t5`` (each cell its own ``deepspeed`` process): three
representative methods in the default suite (an adapter, a soft prompt with its generation hook, a prefix), all
nine under the ``matrix`` marker (``make test-models``).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import hydra
import peft
import pytest
import torch
from hydra.utils import instantiate

from bench.models import chartok, checks, loading
from bench.pipeline import estimate, evaluate, tinybase
from bench.pipeline.losses import token_cross_entropy
from bench.run import execute
from bench.taskdata import encoding, family, splits
from tests.conftest import CONF, ROOT, TINY, child_env, compose_cfg

METHODS = sorted(p.stem for p in (CONF / "method").glob("*.yaml") if not p.stem.startswith("_"))
DEFAULT = ["lora", "prompt_tuning", "prefix_tuning"]   # adapter, soft prompt (generation hook), prefix
T5 = ["model=tiny_t5"]


@pytest.fixture(scope="module")
def tokenizer():
    """A character tokenizer over the embedded task's texts, as a tiny base has."""
    task = compose_cfg(*TINY, *T5).task
    return chartok.build(tinybase.corpus_texts(splits.load(task, "train")[:64], task))


def tiny_t5(tokenizer, seed: int = 0):
    """A random tiny_t5 with the tokenizer's ids, as bench.pipeline.tinybase builds it."""
    return loading.build_tiny(compose_cfg(*T5).model, len(tokenizer), seed, loading.special_ids(tokenizer))


def test_records_become_encoder_input_and_decoder_labels(tokenizer):
    cfg = compose_cfg(*TINY, *T5)
    records = splits.load(cfg.task, "train")[:4]
    seq2seq, causal = (family.of(cfg.model).encode(records, tokenizer, cfg.task),
                       encoding.encode(records, tokenizer, cfg.task))
    for s, c, rec in zip(seq2seq, causal, records):
        answer = tokenizer(rec["output"], add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
        assert s["labels"] == answer   # the answer alone, nothing masked
        assert s["input_ids"] + s["labels"] == c["input_ids"]   # the causal sequence, cut in two
        assert s["widths"] == [len(s["input_ids"]), len(s["labels"])]
    batch = encoding.collate(seq2seq, tokenizer.pad_token_id)
    assert batch["labels"].shape == (4, max(len(e["labels"]) for e in seq2seq))   # the decoder's own width
    assert batch["input_ids"].shape == batch["attention_mask"].shape == (4, max(len(e["input_ids"]) for e in seq2seq))
    assert family.of(cfg.model).tokens(batch) == sum(encoding.length(e) for e in seq2seq)


def test_loss_alignment_matches_the_models_own_loss(tokenizer):
    cfg = compose_cfg(*TINY, *T5)
    kind = family.of(cfg.model)
    model = tiny_t5(tokenizer).eval()
    batch = encoding.collate(kind.encode(splits.load(cfg.task, "train")[:6], tokenizer, cfg.task),
                             tokenizer.pad_token_id)
    out = model(**kind.model_inputs(batch))
    ce, n = token_cross_entropy(out.logits, batch["labels"], shift=kind.label_shift)
    assert float(ce / n) == pytest.approx(float(out.loss), rel=1e-5)   # T5's loss: mean over the decoder labels
    # The same holds through PEFT's prompt-learning wrapper: virtual tokens are the encoder's, logits the decoder's.
    wrapped = peft.get_peft_model(tiny_t5(tokenizer), peft.PrefixTuningConfig(task_type="SEQ_2_SEQ_LM",
                                                                              num_virtual_tokens=4)).eval()
    out = wrapped(**kind.model_inputs(batch))
    ce, n = token_cross_entropy(out.logits, batch["labels"], shift=kind.label_shift)
    assert float(ce / n) == pytest.approx(float(out.loss), rel=1e-5)


def test_generation_returns_the_new_tokens_only(tokenizer):
    model = tiny_t5(tokenizer, seed=3).eval()
    prompts = ["Extract: a_b", "Extract the triples from this longer text"]
    answers, _, generated = evaluate.generate(model, tokenizer, prompts, batch_size=2, max_new_tokens=6)
    for prompt, answer in zip(prompts, answers):
        ids = torch.tensor([encoding.prompt_ids(tokenizer, prompt)])
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=6, do_sample=False)
        assert int(out[0, 0]) == model.config.decoder_start_token_id   # what generate returns before the new ids
        new = out[0, 1:]
        stop = (new == tokenizer.eos_token_id).nonzero()
        assert answer == tokenizer.decode(new[: int(stop[0]) if len(stop) else len(new)], skip_special_tokens=True)
    assert 0 < generated <= 12


@pytest.mark.parametrize("method", ["prompt_tuning", "p_tuning"])
def test_soft_prompt_hook_gives_batched_answers_equal_to_one_at_a_time(tokenizer, tmp_path, method):
    """Measured before choosing (a random tiny T5): PEFT's own generate on a left-padded batch puts the prompt before
    the pads, which moves the text away from it by the batch's padding, and changed 5 (prompt tuning) and 3
    (P-Tuning) of 12 answers; the soft prompts' hook (pads first) changes none."""
    tokenizer.save_pretrained(tmp_path / "tokenizer")
    cfg = compose_cfg(*TINY, *T5, f"method={method}", f"out_dir={tmp_path}")
    model = peft.get_peft_model(tiny_t5(tokenizer), instantiate(cfg.method.peft_config))
    torch.manual_seed(1)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.5)   # a prompt and base that say something
    hook = hydra.utils.get_method(cfg.method.hooks.generate)
    prompts = [encoding.prompt_text(r, cfg.task, tokenizer) for r in splits.load(cfg.task, "test")[:10]]
    batched, _, _ = evaluate.generate(model, tokenizer, prompts, batch_size=10, max_new_tokens=12, generate_fn=hook)
    single, _, _ = evaluate.generate(model, tokenizer, prompts, batch_size=1, max_new_tokens=12)   # PEFT's own
    assert batched == single and len(set(single)) > 1


def test_prompt_tuning_starts_from_the_task_instruction_text(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path / "tokenizer")
    cfg = compose_cfg(*TINY, *T5, "method=prompt_tuning", f"out_dir={tmp_path}")
    base = tiny_t5(tokenizer)
    model = peft.get_peft_model(base, instantiate(cfg.method.peft_config))
    virtual = int(cfg.method.peft_config.num_virtual_tokens)
    text = tokenizer(str(cfg.task.prompt_init_text), add_special_tokens=False).input_ids
    ids = (text * (2 * virtual // len(text) + 1))[:virtual]   # PEFT repeats the text to fill the prompt
    prompt = model.prompt_encoder["default"].embedding.weight[:virtual]
    assert torch.equal(prompt, base.get_input_embeddings().weight[ids])


def test_memory_estimate_sizes_encoder_decoders_before_loading():
    tiny = estimate.preflight(compose_cfg(*TINY, *T5, "method=lora"))
    assert tiny["label_length"] == tiny["length"] // 2 and tiny["activations_bytes"] > 0
    flan = estimate.preflight(compose_cfg("model=flan_t5_base", "method=full", "train.micro_batch_size=1",
                                        "task.max_length=512"))
    # From the YAML's shape: 222.9M parameters in fp32. FLAN-T5-base publishes 247.6M with its own output head;
    # transformers 5 builds every T5 with the head tied to the shared embedding (T5Config), 24.7M fewer.
    assert 4 * 220e6 < flan["weights_bytes"] < 4 * 250e6


def test_a_hub_encoder_decoder_loads_through_its_yaml(tokenizer, tmp_path):
    tiny_t5(tokenizer).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    cfg = compose_cfg("model=flan_t5_base", "model.source=local", f"model.path={tmp_path}", "method=lora")
    tok, model, info = loading.load(cfg)
    assert type(model).__name__ == "T5ForConditionalGeneration" and info["path"] == str(tmp_path)
    checks.check_loaded(cfg, model)


def refused(cfg) -> str:
    """Run ``cfg`` in-process; it must be refused as invalid within seconds. Returns the error."""
    start = time.perf_counter()
    assert execute(cfg) == 2
    record = json.loads((Path(cfg.out_dir) / "result.json").read_text())["run_info"]
    assert record["status"] == "invalid" and time.perf_counter() - start < 30, record
    return record["error"]


def test_a_causal_only_method_is_refused_on_an_encoder_decoder(tiny_cfg):
    error = refused(tiny_cfg(*T5, "method=prompt_tuning", "method.task_types=[CAUSAL_LM]",
                             "method.task_types_note='its generation hook assumes a decoder-only model'"))
    assert "SEQ_2_SEQ_LM" in error and "method.task_types" in error and "decoder-only" in error


@pytest.mark.parametrize(("overrides", "says"), [
    (["method=lora", "method.peft_config.task_type=CAUSAL_LM"], "method.peft_config.task_type=CAUSAL_LM"),
    (["model.task_type=CAUSAL_LM"], "AutoModelForCausalLM"),
    (["model.task_type=TOKEN_CLS"], "must be one of CAUSAL_LM, SEQ_2_SEQ_LM"),
], ids=["peft-task-type", "wrong-family", "unknown-family"])
def test_a_wrong_task_type_is_refused_in_seconds(tiny_cfg, overrides, says):
    assert says in refused(tiny_cfg(*T5, *overrides))


def test_freeze_counts_the_decoder_blocks(tiny_cfg):
    assert "method.layers=3 must be in 1..2" in refused(tiny_cfg(*T5, "method=freeze", "method.layers=3"))


def launched(root: Path, cache_dir: Path, methods: list[str]) -> Path:
    """The shrunk ``sweep=t5`` of ``methods`` on tiny_t5 into ``root``, each cell through ``deepspeed``."""
    cmd = [sys.executable, "-m", "bench.sweep", "sweep=t5", f"methods=[{','.join(methods)}]", f"sweep_dir={root}",
           "report=false", "--", *TINY, f"cache_dir={cache_dir}"]
    subprocess.run(cmd, cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=1800)
    return root     # each method's test reads its own cell: one failing method fails one test


@pytest.fixture(scope="module")
def t5_default(tmp_path_factory, cache_dir) -> Path:
    """The representative methods' cells."""
    return launched(tmp_path_factory.mktemp("t5"), cache_dir, DEFAULT)


@pytest.fixture(scope="module")
def t5_rest(tmp_path_factory, cache_dir) -> Path:
    """Every other method's cells (the matrix)."""
    return launched(tmp_path_factory.mktemp("t5_rest"), cache_dir, sorted(set(METHODS) - set(DEFAULT)))


def check_launched(root: Path, method: str) -> None:
    """The cell succeeded, its loss fell, and its saved weights reproduce its predictions in a fresh process."""
    out = root / "tiny_t5" / "triples_synth" / method / "seed0"
    result = json.loads((out / "result.json").read_text())
    log = (out / "run.log").read_text()[-3000:] if (out / "run.log").exists() else ""
    assert result["run_info"]["status"] == "success", f"{result['run_info'].get('error')}\n{log}"
    curve = result["train_info"]["loss_curve"]
    assert statistics.mean(curve[-3:]) < statistics.mean(curve[:3]), f"{method} loss did not fall: {curve}"
    assert result["train_info"]["mem_estimate_bytes"] > 0 and result["eval_info"]["forgetting_measure"] == "source_task"
    done = subprocess.run([sys.executable, "-m", "bench.reproduce", str(out), "--batch-size", "1", "--batch-size", "64",
                           "--plain"], cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=300)
    report = json.loads(done.stdout)
    assert done.returncode == 0 and report["ok"], report
    assert all(s["identical"] == 8 for s in report["setups"].values())


@pytest.mark.slow
@pytest.mark.parametrize("method", DEFAULT)
def test_representative_methods_run_on_t5_through_the_launcher(t5_default, method):
    check_launched(t5_default, method)


@pytest.mark.slow
@pytest.mark.matrix
@pytest.mark.parametrize("method", sorted(set(METHODS) - set(DEFAULT)))
def test_every_other_method_runs_on_t5_through_the_launcher(t5_rest, method):
    check_launched(t5_rest, method)
