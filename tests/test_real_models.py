"""The real-model YAMLs against their architectures, without a download.

Hub weights are gigabytes and this machine has no network, so each YAML is checked against the architecture
it names: the published shape built on the meta device (names, layer count, parameter count, no memory), and
a scaled-down replica with real tensors that the harness's own freeze and peft code adapt. ChatGLM-6B's classes
are remote code: its YAML is checked on a replica of the published module tree, and against the real config
where the local Hugging Face cache holds it.
"""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from peft import inject_adapter_in_model
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn
from transformers import AutoConfig, LlamaConfig, LlamaForCausalLM

from bench.models import loading
from bench.pipeline import validate
from methods import native, peft_adapter
from tests.conftest import CONF, compose_cfg

LLAMA = ["llama2_7b", "codellama_7b", "codellama_34b"]
HUB = [*LLAMA, "chatglm_6b"]
METHODS = sorted(p.stem for p in (CONF / "method").glob("*.yaml") if not p.stem.startswith("_"))
LORA_FAMILY = ["lora", "adalora", "vblora"]
GENERIC = ["model=hf_causal_lm", "model.path=some-org/some-causal-lm"]
# Their float16 weights train in fp16, what deepspeed=auto picks on a GPU (on CPU it picks fp32 and validation
# refuses float16 weights: tests/test_defects.py), so the preflight names that precision and runs on any machine.
GPU_PRECISION = "deepspeed=fp16"

# What each model's hub config.json publishes (ChatGLM names: inner_hidden_size, num_layers, max_sequence_length),
# and the parameter count the model card states. Looked up in copies of the published files: CodeLlama-7b(-Instruct)-hf
# config.json (vocab 32016 = 32000 + 16 infilling tokens, rope_theta 1e6, 16384 positions); Meta's reference tables
# as mirrored in tinygrad's examples/llama.py ("code" 34B: dim 8192, 48 layers, 64 heads, 8 kv heads, hidden 22016,
# vocab 32000, rope_theta 1e6); THUDM/chatglm-6b config.json (mirror greensheng/chatglm-6b, commit fba708a).
PUBLISHED = {
    "llama2_7b": dict(model_type="llama", hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                      num_attention_heads=32, num_key_value_heads=32, vocab_size=32000, max_position_embeddings=4096),
    "codellama_7b": dict(model_type="llama", hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                         num_attention_heads=32, num_key_value_heads=32, vocab_size=32016,
                         max_position_embeddings=16384),
    "codellama_34b": dict(model_type="llama", hidden_size=8192, intermediate_size=22016, num_hidden_layers=48,
                          num_attention_heads=64, num_key_value_heads=8, vocab_size=32000,
                          max_position_embeddings=16384),
    "chatglm_6b": dict(hidden_size=4096, intermediate_size=16384, num_hidden_layers=28, num_attention_heads=32,
                       num_key_value_heads=32, vocab_size=130528, max_position_embeddings=2048),
}
PARAMS_B = {"llama2_7b": 6.74, "codellama_7b": 6.74, "codellama_34b": 33.7}
ROPE_THETA = {"llama2_7b": 10_000.0, "codellama_7b": 1_000_000.0, "codellama_34b": 1_000_000.0}
CHATGLM_KEYS = {"hidden_size": "hidden_size", "intermediate_size": "inner_hidden_size",
                "num_hidden_layers": "num_layers", "num_attention_heads": "num_attention_heads",
                "vocab_size": "vocab_size", "max_position_embeddings": "max_sequence_length"}


def adapted(model: nn.Module) -> tuple[set[str], list[str]]:
    """Paths (peft's prefix dropped) of the modules peft wrapped, and trainable parameters outside any of them."""
    wrapped = {n for n, m in model.named_modules() if isinstance(m, BaseTunerLayer)}
    outside = [n for n, p in model.named_parameters()
               if p.requires_grad and (".base_layer." in n or not any(n.startswith(w + ".") for w in wrapped))]
    return {n.removeprefix("base_model.model.") for n in wrapped}, outside


def linear_paths(model: nn.Module, *, skip: str = "lm_head") -> set[str]:
    """Every nn.Linear of ``model`` but the output head."""
    return {n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n != skip}


def llama_config(name: str, shape: dict, **scaled: int) -> LlamaConfig:
    """LLaMA's config with the YAML's shape (``scaled`` overrides it) and the published rope theta."""
    dims = {k: v for k, v in shape.items() if k != "model_type"}
    return LlamaConfig(**{**dims, **scaled}, rope_theta=ROPE_THETA[name], tie_word_embeddings=False)


def replica(name: str, layers: int = 3) -> LlamaForCausalLM:
    """The YAML's shape shrunk: 2 kv heads with the same query/kv ratio, head_dim 16, the same ffn ratio."""
    shape = OmegaConf.to_container(compose_cfg(f"model={name}").model.shape)
    ratio = shape["num_attention_heads"] // shape["num_key_value_heads"]
    hidden = 2 * ratio * 16             # ≥ 32: VB-LoRA's vector_length divides every target's input width
    ffn = hidden * shape["intermediate_size"] // shape["hidden_size"] // 8 * 8
    torch.manual_seed(0)
    return LlamaForCausalLM(llama_config(name, shape, hidden_size=hidden, intermediate_size=ffn,
                                         num_hidden_layers=layers, num_attention_heads=2 * ratio,
                                         num_key_value_heads=2))


def chatglm_replica(hidden: int = 16, layers: int = 3, vocab: int = 64) -> nn.Module:
    """ChatGLM-6B's module tree as published, shrunk (no forward: only names and shapes matter here).

    THUDM/chatglm-6b modeling_chatglm.py (mirror greensheng/chatglm-6b, commit 3118bcb): ChatGLMForConditionalGeneration
    has ``transformer`` (ChatGLMModel: ``word_embeddings``, ``layers`` = ModuleList of GLMBlock, ``final_layernorm``)
    and ``lm_head``; a GLMBlock has ``input_layernorm``, ``attention`` (SelfAttention: ``query_key_value`` =
    Linear(h, 3h) with bias, ``dense``), ``post_attention_layernorm`` and ``mlp`` (GLU: ``dense_h_to_4h``,
    ``dense_4h_to_h``). So layer N's QKV weight is ``transformer.layers.N.attention.query_key_value.weight``.
    """
    ffn = 4 * hidden

    def block() -> nn.Module:
        return nn.ModuleDict({
            "input_layernorm": nn.LayerNorm(hidden),
            "attention": nn.ModuleDict({"query_key_value": nn.Linear(hidden, 3 * hidden),
                                        "dense": nn.Linear(hidden, hidden)}),
            "post_attention_layernorm": nn.LayerNorm(hidden),
            "mlp": nn.ModuleDict({"dense_h_to_4h": nn.Linear(hidden, ffn), "dense_4h_to_h": nn.Linear(ffn, hidden)})})

    return nn.ModuleDict({
        "transformer": nn.ModuleDict({"word_embeddings": nn.Embedding(vocab, hidden),
                                      "layers": nn.ModuleList(block() for _ in range(layers)),
                                      "final_layernorm": nn.LayerNorm(hidden)}),
        "lm_head": nn.Linear(hidden, vocab, bias=False)})


def cached_config(path: str, remote: bool, revision: str | None = None):
    """The model's config (at the YAML's revision) from the local Hugging Face cache, or a skip that says why not."""
    try:
        return AutoConfig.from_pretrained(path, trust_remote_code=remote, revision=revision, local_files_only=True)
    except OSError as err:
        files = "config.json and its remote code (*.py)" if remote else "config.json"
        pytest.skip(f"{path} is not in the local Hugging Face cache and this machine cannot download it "
                    f"({type(err).__name__}); its {files} in the cache enable this check")


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("model", [*HUB, "hf_causal_lm"])
def test_hub_model_composes_with_every_method_and_passes_preflight(model, method):
    extra = GENERIC[1:] if model == "hf_causal_lm" else []
    cfg = compose_cfg(f"model={model}", f"method={method}", GPU_PRECISION, *extra)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert (resolved["model"]["name"], resolved["method"]["name"]) == (model, method)
    if method in LORA_FAMILY:
        assert resolved["method"]["peft_config"]["target_modules"] == resolved["model"]["lora_targets"]
    validate.check(cfg)     # the checks a real run makes before it downloads anything


def test_generic_model_needs_its_path():
    with pytest.raises(validate.ConfigError, match=r"model\.path not set"):
        validate.check(compose_cfg("model=hf_causal_lm"))


@pytest.mark.parametrize("model", HUB)
def test_shape_is_the_published_architecture(model):
    assert OmegaConf.to_container(compose_cfg(f"model={model}").model.shape) == PUBLISHED[model]


@pytest.mark.parametrize("model", LLAMA)
def test_shape_builds_the_published_model_on_the_meta_device(model):
    cfg = compose_cfg(f"model={model}")
    shape = OmegaConf.to_container(cfg.model.shape)
    with torch.device("meta"):
        full = LlamaForCausalLM(llama_config(model, shape))
    assert sum(p.numel() for p in full.parameters()) / 1e9 == pytest.approx(PARAMS_B[model], rel=0.005)
    assert native.layer_count(full, cfg.model) == shape["num_hidden_layers"]
    head_dim = shape["hidden_size"] // shape["num_attention_heads"]
    assert full.model.layers[0].self_attn.k_proj.out_features == shape["num_key_value_heads"] * head_dim
    for target in cfg.model.lora_targets:
        hits = [n for n, _ in full.named_modules() if n.endswith(f".{target}")]
        assert len(hits) == shape["num_hidden_layers"], target


@pytest.mark.parametrize("model", LLAMA)
def test_layer_prefix_finds_every_layer_and_freeze_keeps_the_last(model):
    cfg = compose_cfg(f"model={model}", "method=freeze")
    net = replica(model)
    assert native.layer_count(net, cfg.model) == 3
    native.freeze_all_but_last(net, cfg.method, cfg.model)
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    last = {n for n, _ in net.named_parameters() if n.startswith(f"{cfg.model.layer_prefix}.2.")}
    assert trainable == last and last


@pytest.mark.parametrize("method", LORA_FAMILY)
@pytest.mark.parametrize("model", LLAMA)
def test_yaml_targets_are_exactly_what_peft_adapts(model, method):
    cfg = compose_cfg(f"model={model}", f"method={method}")
    net = replica(model)
    expected = {n for n, _ in net.named_modules() if n.rsplit(".", 1)[-1] in cfg.model.lora_targets}
    assert {n.rsplit(".", 1)[-1] for n in expected} == set(cfg.model.lora_targets)   # every target names a module
    wrapped, outside = adapted(peft_adapter.wrap(net, cfg.method, cfg.model))
    assert wrapped == expected
    assert all("vector_bank" in n for n in outside), outside     # VB-LoRA's shared bank is the one extra


@pytest.mark.parametrize("model", LLAMA)
def test_shape_matches_the_cached_hub_config(model):
    cfg = compose_cfg(f"model={model}").model
    config = cached_config(cfg.path, remote=False)
    assert {k: getattr(config, k) for k in PUBLISHED[model]} == PUBLISHED[model]


def test_chatglm_yaml_names_the_published_module_tree():
    cfg = compose_cfg("model=chatglm_6b", "method=lora")
    net = chatglm_replica()
    assert native.layer_count(net, cfg.model) == 3
    inject_adapter_in_model(instantiate(cfg.method.peft_config), net)
    wrapped, _ = adapted(net)
    assert wrapped == {f"transformer.layers.{i}.attention.query_key_value" for i in range(3)}
    freeze = compose_cfg("model=chatglm_6b", "method=freeze")
    native.freeze_all_but_last(chatglm_replica(), freeze.method, freeze.model)   # layer_prefix matches


def test_chatglm_loads_through_the_auto_class_its_config_maps():
    assert loading.auto_class(compose_cfg("model=chatglm_6b").model).__name__ == "AutoModel"
    assert loading.auto_class(compose_cfg("model=llama2_7b").model).__name__ == "AutoModelForCausalLM"
    with pytest.raises(validate.ConfigError, match="auto_class=AutoModelForCausalLLM"):
        loading.auto_class(OmegaConf.create({"auto_class": "AutoModelForCausalLLM", "task_type": "CAUSAL_LM"}))


def test_chatglm_shape_and_names_match_the_cached_remote_code():
    cfg = compose_cfg("model=chatglm_6b").model
    config = cached_config(cfg.path, remote=True, revision=cfg.revision)
    assert {ours: getattr(config, theirs) for ours, theirs in CHATGLM_KEYS.items()} == \
        {k: v for k, v in PUBLISHED["chatglm_6b"].items() if k in CHATGLM_KEYS}
    assert "AutoModelForCausalLM" not in config.auto_map and cfg.auto_class in config.auto_map
    try:
        with torch.device("meta"):
            net = loading.auto_class(cfg).from_config(config, trust_remote_code=True)
    except Exception as err:  # noqa: BLE001  (old remote code fails in many ways under a newer transformers)
        pytest.skip(f"THUDM/chatglm-6b's remote code does not build here ({type(err).__name__}: {err}); "
                    "it needs transformers 4.3x (docs/models.md)")
    assert native.layer_count(net, cfg) == PUBLISHED["chatglm_6b"]["num_hidden_layers"]
    assert f"{cfg.layer_prefix}.0.attention.query_key_value.weight" in dict(net.named_parameters())


@pytest.mark.parametrize("method", LORA_FAMILY)
@pytest.mark.parametrize("tiny", ["tiny_llama", "tiny_glm"])
def test_all_linear_adapts_every_linear_layer_but_the_head(tiny, method):
    cfg = compose_cfg(*GENERIC, f"method={method}")
    net = loading.build_tiny(compose_cfg(f"model={tiny}").model, vocab_size=64, seed=0,
                              special={"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2})
    linears = linear_paths(net)
    assert native.layer_count(net, cfg.model) == 2                  # model.layers holds for GLM too
    wrapped, outside = adapted(peft_adapter.wrap(net, cfg.method, cfg.model))
    assert wrapped == linears and "lm_head" not in wrapped
    assert all("vector_bank" in n for n in outside), outside
    if tiny == "tiny_glm" and method == "lora":                     # tiny_glm's own targets are that same set
        assert {n.rsplit(".", 1)[-1] for n in linears} == set(compose_cfg("model=tiny_glm").model.lora_targets)
