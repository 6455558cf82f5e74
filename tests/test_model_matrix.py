"""The tiny stand-ins of the other architectures: tiny_codellama's vocabulary, and every method on both models.

The matrix (nine methods × tiny_codellama, tiny_glm) runs as one sweep, ``conf/sweep/models.yaml``: each cell
is its own process through the real ``deepspeed`` launcher, as in a benchmark. It is marked ``slow`` and
``matrix``: `make test` leaves it out, `make test-models` runs it.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoTokenizer

import tasks
from bench.models import chartok, loading
from bench.pipeline import evaluate, tinybase
from tests.conftest import CONF, ROOT, child_env, compose_cfg, require_lock

METHODS = sorted(p.stem for p in (CONF / "method").glob("*.yaml") if not p.stem.startswith("_"))
MODELS = ["tiny_codellama", "tiny_glm"]
CODELLAMA_VOCAB, CODELLAMA_ROPE_THETA = 32016, 1_000_000.0   # codellama/CodeLlama-7b-hf config.json
SPECIAL = {"pad_token_id": 0, "bos_token_id": 2, "eos_token_id": 3}


def rope_theta(config) -> float:
    """The rope base of a config (transformers 5 keeps it in ``rope_parameters``)."""
    return float((getattr(config, "rope_parameters", None) or {}).get("rope_theta") or config.rope_theta)


def test_tiny_codellama_carries_codellamas_vocabulary_and_rope():
    model_cfg = compose_cfg("model=tiny_codellama").model
    assert compose_cfg("model=codellama_7b").model.shape.vocab_size == CODELLAMA_VOCAB   # the stand-in tracks it
    net = loading.build_tiny(model_cfg, vocab_size=250, seed=0, special=SPECIAL)
    assert net.config.vocab_size == CODELLAMA_VOCAB
    assert net.get_input_embeddings().weight.shape[0] == net.get_output_embeddings().weight.shape[0] == CODELLAMA_VOCAB
    assert rope_theta(net.config) == CODELLAMA_ROPE_THETA


def test_arch_vocab_size_is_a_floor_and_optional():
    codellama, llama = compose_cfg("model=tiny_codellama").model, compose_cfg("model=tiny_llama").model
    with torch.device("meta"):
        assert loading.build_tiny(codellama, vocab_size=40_000, seed=0).config.vocab_size == 40_000
        assert loading.build_tiny(llama, vocab_size=250, seed=0).config.vocab_size == 250
    assert "vocab_size" not in llama.arch      # tiny_llama's config (and so the committed baseline) is unchanged


def test_base_key_covers_the_vocabulary_floor():
    key = tinybase.tokenizer_and_key(compose_cfg("model=tiny_codellama"))[1]
    assert key != tinybase.tokenizer_and_key(compose_cfg("model=tiny_codellama", "model.arch.vocab_size=32000"))[1]
    assert key != tinybase.tokenizer_and_key(compose_cfg("model=tiny_codellama", "~model.arch.vocab_size"))[1]


def test_tiny_llama_base_is_still_the_one_the_committed_baseline_measured():
    require_lock()
    baseline = json.loads((ROOT / "results/baselines/embedded.json").read_text())
    assert tinybase.tokenizer_and_key(compose_cfg())[1] == baseline["fingerprint"]["base_key"], (
        "tiny_llama's base key moved: the embedded baseline no longer applies "
        "(docs/regressions.md: updating the baseline)")


@pytest.fixture(scope="module")
def char_tokenizer(tmp_path_factory):
    """A small character tokenizer, as built and as reloaded from disk (what a run's evaluation uses)."""
    built = chartok.build(["head_relation_tail", "Extract the triples."])
    path = tmp_path_factory.mktemp("tok")
    built.save_pretrained(path)
    return built, AutoTokenizer.from_pretrained(path)


def test_decoding_ids_past_the_tokenizer_never_raises(char_tokenizer):
    for tok in char_tokenizer:
        ids = tok("head_tail").input_ids
        past = [len(tok), 30_000, CODELLAMA_VOCAB - 1]
        for skip in (True, False):
            assert tok.decode([*ids, *past], skip_special_tokens=skip) == "head_tail"
            assert tok.decode(torch.tensor([past[0], *ids, past[1]]), skip_special_tokens=skip) == "head_tail"
        assert tok.batch_decode([past, ids]) == ["", "head_tail"]


def test_generation_that_emits_unknown_ids_yields_unparseable_answers_not_a_crash(char_tokenizer):
    tok = char_tokenizer[1]
    net = loading.build_tiny(compose_cfg("model=tiny_codellama").model, len(tok), seed=0,
                              special=loading.special_ids(tok))
    head = torch.nn.Linear(net.config.hidden_size, CODELLAMA_VOCAB)     # greedy decoding always picks id 30000
    torch.nn.init.zeros_(head.weight)
    with torch.no_grad():
        head.bias.zero_()[30_000] = 1.0
    net.set_output_embeddings(head)
    task = compose_cfg().task
    answers, latency, generated = evaluate.generate(net, tok, ["Extract the triples.", "head"], batch_size=2,
                                                    max_new_tokens=5)
    assert answers == ["", ""] and generated == 10 and len(latency) == 2
    scores = tasks.module(task).score(answers, ["a_b_c", "d_e_f"], task)
    assert scores["f1_micro"] == 0.0


@pytest.fixture(scope="module")
def matrix(tmp_path_factory, cache_dir) -> Path:
    """All nine methods on both tiny models: one ``bench.sweep`` command, every cell through ``deepspeed``."""
    root = tmp_path_factory.mktemp("matrix")
    cmd = [sys.executable, "-m", "bench.sweep", "sweep=models", f"sweep_dir={root}", "--", f"cache_dir={cache_dir}"]
    subprocess.run(cmd, cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=1800)
    return root     # each cell's test reads its own result (and log): one failing method fails one test


@pytest.mark.slow
@pytest.mark.matrix
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("model", MODELS)
def test_every_method_runs_on_every_tiny_architecture(matrix, model, method):
    out = matrix / model / "triples_synth" / method / "seed0"
    result = json.loads((out / "result.json").read_text())
    log = (out / "run.log").read_text()[-3000:] if (out / "run.log").exists() else ""
    assert result["run_info"]["status"] == "success", f"{result['run_info'].get('error')}\n{log}"
    train = result["train_info"]
    assert result["meta_info"]["world_size"] == 1
    assert 0 < train["trainable_params"] <= train["total_params"]
    assert len(train["loss_curve"]) == 3 and all(math.isfinite(x) for x in train["loss_curve"])
    assert train["adapter_bytes"] > 0 and any((out / "adapter").iterdir())
    assert result["eval_info"]["n"] == 4
    config = AutoConfig.from_pretrained(result["base_info"]["path"])
    assert config.model_type == {"tiny_codellama": "llama", "tiny_glm": "glm"}[model]
    if model == "tiny_codellama":
        assert config.vocab_size == CODELLAMA_VOCAB and rope_theta(config) == CODELLAMA_ROPE_THETA
