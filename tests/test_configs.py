"""Every shipped YAML composes, and real-model configs match their architectures' module names."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from tests.conftest import CONF, compose_cfg


def names(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml") if not p.stem.startswith("_"))


def test_groups_ship_what_the_design_promises():
    assert {"full", "freeze", "prompt_tuning", "p_tuning", "prefix_tuning", "p_tuning_v2", "lora", "adalora",
            "vblora"} <= set(names("method"))
    assert {"tiny_llama", "tiny_codellama", "tiny_glm", "chatglm_6b", "llama2_7b", "codellama_7b",
            "codellama_34b"} <= set(names("model"))
    assert {"triples_synth", "triples"} <= set(names("task"))
    assert {"auto", "fp16", "bf16", "fp32"} <= set(names("deepspeed"))


@pytest.mark.parametrize("group", ["model", "method", "task", "deepspeed"])
def test_every_yaml_composes_and_resolves(group):
    for name in names(group):
        extra = ["task.data.train=a.json", "task.data.test=b.json"] if (group, name) == ("task", "triples") else []
        cfg = compose_cfg(f"{group}={name}", *extra)
        resolved = OmegaConf.to_container(cfg, resolve=True)
        assert resolved[group]["name"] == name


def test_the_default_sweep_runs_every_method_yaml():
    """One YAML adds a method: the default grid discovers conf/method/, each method once, in the figures' order."""
    from bench.core.labels import method_order
    from bench.sweeping.grid import grid

    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("sweep")
    methods = [c.method for c in grid(cfg)]
    assert methods == method_order(names("method")) and len(set(methods)) == len(methods)


@pytest.mark.parametrize("method", names("method"))
def test_every_method_yaml_is_whole(method):
    """What the run, the sweep and bench.reproduce ask of every method, checked on whatever conf/method/ holds."""
    import hydra

    cfg = compose_cfg(f"method={method}")
    assert cfg.method.name == method
    for role in ("builder", "saver", "loader"):
        assert callable(hydra.utils.get_method(cfg.method[role])), f"method.{role} of {method}"
    for hook in cfg.method.hooks.values():
        assert hook is None or callable(hydra.utils.get_method(hook))
    assert set(cfg.method.task_types) <= {"CAUSAL_LM", "SEQ_2_SEQ_LM"} and float(cfg.method.lr) > 0


PEFT_METHODS = [m for m in names("method") if "peft_config" in compose_cfg(f"method={m}").method]


@pytest.mark.parametrize("method", PEFT_METHODS)
def test_peft_methods_instantiate_their_peft_config(method):
    cfg = compose_cfg(f"method={method}")
    peft_config = instantiate(cfg.method.peft_config)
    assert type(peft_config).__name__ == cfg.method.peft_config._target_.split(".")[-1]
    if hasattr(peft_config, "target_modules") and peft_config.target_modules is not None:
        assert isinstance(peft_config.target_modules, (list, set))


def test_prefix_and_p_tuning_v2_differ_only_in_projection():
    a, b = compose_cfg("method=prefix_tuning").method, compose_cfg("method=p_tuning_v2").method
    assert a.peft_config.prefix_projection is True and b.peft_config.prefix_projection is False
    assert not a.supports_gradient_checkpointing and not b.supports_gradient_checkpointing


def test_adalora_total_step_is_the_run_budget():
    cfg = compose_cfg("method=adalora", "train.steps=250")
    pc = instantiate(cfg.method.peft_config)
    assert pc.total_step == 250 and pc.tinit == 25 and pc.tfinal == 50


def test_vblora_has_separate_learning_rates():
    groups = compose_cfg("method=vblora").method.param_groups
    lrs = {g.match: g.lr for g in groups}
    assert set(lrs) == {"vblora_vector_bank", "vblora_logits"} and lrs["vblora_vector_bank"] != lrs["vblora_logits"]


def test_only_chatglm_opts_in_to_remote_code():
    for name in names("model"):
        assert compose_cfg(f"model={name}").model.trust_remote_code == (name == "chatglm_6b")


def test_codellama_34b_carries_the_seed_lora():
    cfg = compose_cfg("model=codellama_34b", "method=lora")
    pc = instantiate(cfg.method.peft_config)
    assert (pc.r, pc.lora_alpha, pc.lora_dropout) == (8, 16, 0.05)
    assert set(pc.target_modules) == {"q_proj", "v_proj"}
