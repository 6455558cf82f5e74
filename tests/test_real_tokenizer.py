"""The real LLaMA-2 SentencePiece tokenizer on the seed's real data: prompts, label masking, decoding, parsing.

Uses ../shared (skipped where it is absent); nothing in the product depends on it.
"""

from __future__ import annotations

import pytest
import torch

from bench.pipeline import evaluate
from bench.taskdata import encoding, splits
from tasks import triples
from tests.conftest import SHARED, compose_cfg

TOKENIZER = SHARED / "assets" / "llama2-tokenizer"
SPO_TEST = SHARED / "data" / "spo" / "spo_1.json"
pytestmark = pytest.mark.skipif(not (TOKENIZER / "tokenizer.model").is_file() or not SPO_TEST.is_file(),
                                reason="../shared (real tokenizer and data) not present")


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import LlamaTokenizer

    tok = LlamaTokenizer.from_pretrained(str(TOKENIZER))
    tok.pad_token, tok.padding_side = tok.eos_token, "left"
    return tok


@pytest.fixture(scope="module")
def spo():
    task = compose_cfg("task=triples_zh", f"task.data.train={SPO_TEST}", f"task.data.test={SPO_TEST}").task
    return task, splits.load(task, "test")


def test_tokenizer_is_the_real_one_with_byte_fallback(tokenizer):
    assert len(tokenizer) == 32000
    pieces = tokenizer.convert_ids_to_tokens(tokenizer("故障", add_special_tokens=False).input_ids)
    assert any(p.startswith("<0x") for p in pieces), pieces  # 障 is not a piece: UTF-8 bytes
    assert tokenizer.decode(tokenizer("故障_组成_x", add_special_tokens=False).input_ids) == "故障_组成_x"


def test_labels_cover_exactly_the_answer(tokenizer, spo):
    task, records = spo
    examples = encoding.encode(records, tokenizer, task)
    for rec, ex in zip(records, examples):
        assert ex["input_ids"][0] == tokenizer.bos_token_id  # added where the tokenizer does not add it
        answer = [t for t, lab in zip(ex["input_ids"], ex["labels"]) if lab != encoding.IGNORE]
        assert answer[-1] == tokenizer.eos_token_id
        assert ex["labels"][: len(ex["labels"]) - len(answer)] == [encoding.IGNORE] * (len(ex["labels"]) - len(answer))
        decoded = tokenizer.decode(answer, skip_special_tokens=True).strip()
        assert triples.parse(decoded)[0] == triples.parse(rec["output"])[0]
        assert len(ex["input_ids"]) <= task.max_length


def test_prompt_keeps_instruction_text_and_separator(tokenizer, spo):
    task, records = spo
    prompt = triples.prompt(records[0], task)
    assert prompt.startswith(records[0]["instruction"]) and prompt.endswith("答：")
    ids = tokenizer(prompt).input_ids
    assert tokenizer.decode(ids, skip_special_tokens=True) == prompt


def test_batched_generation_with_left_padding_decodes(tokenizer, spo):
    from transformers import LlamaConfig, LlamaForCausalLM

    task, records = spo
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=32000, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=2048, pad_token_id=tokenizer.pad_token_id)
    model = LlamaForCausalLM(config)
    prompts = [triples.prompt(r, task) for r in records[:4]]
    batched, _, _ = evaluate.generate(model, tokenizer, prompts, batch_size=4, max_new_tokens=6)
    single, _, _ = evaluate.generate(model, tokenizer, prompts, batch_size=1, max_new_tokens=6)
    assert batched == single and all(isinstance(a, str) for a in batched)
