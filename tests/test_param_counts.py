"""Parameter counts are logical weights: a 4-bit base's packed storage does not halve the model."""

from __future__ import annotations

import pytest
from transformers import AutoConfig, AutoModelForCausalLM

from bench.pipeline import costs


def test_a_4bit_base_counts_as_many_weights_as_in_full_precision(tmp_path):
    pytest.importorskip("bitsandbytes")
    from transformers import BitsAndBytesConfig

    cfg = AutoConfig.for_model("llama", vocab_size=300, hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                               num_attention_heads=4, num_key_value_heads=4)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(tmp_path)
    full = costs.parameter_counts(AutoModelForCausalLM.from_pretrained(tmp_path))["total_params"]
    packed = AutoModelForCausalLM.from_pretrained(tmp_path, quantization_config=BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4"))
    assert sum(p.numel() for p in packed.parameters()) < full          # two 4-bit weights per stored byte
    assert costs.parameter_counts(packed)["total_params"] == full
