"""Bad input fails in seconds, exit status 2, with a message naming the field, the value and the fix.

Every case asserts the exit status, a fragment of the message, that no success record exists, and
its own time. Most fail before any model loads (no tokenizer saved yet); the ``LOADED`` cases need a
real model's module names or positions and fail on the loaded model, before training. Hydra's
refusals (unknown names, bad overrides) happen before ``execute`` and leave no result.json: their
message is Hydra's, then one line from ``bench.run``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from bench.pipeline import validate
from bench.run import execute
from tests.conftest import ROOT, child_env, compose_cfg, deepspeed_cmd

LIMIT_S = 10.0
GOOD = {"text": "风扇异响", "answer": "风扇_部件故障_异响"}
# A user's files with room in the tiny model's 512 positions (triples.yaml asks 768 + 128).
SHORT = ["task.max_length=192", "task.max_new_tokens=64"]
FIELDS = ["task.data.fields={input:text,output:answer}", "task.data.holdout.validation=0"]


def write(path: Path, text: str | bytes) -> Path:
    """A file with this content."""
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def rows(*records: object) -> str:
    """A JSON list of records."""
    return json.dumps(list(records), ensure_ascii=False)


def user_data(train: str | bytes | None, *extra: str) -> Callable[[Path], list[str]]:
    """Overrides for ``task=triples`` with this train file (``None``: missing) and a good eval file."""

    def make(tmp: Path) -> list[str]:
        train_path = tmp / "missing.json" if train is None else write(tmp / "train.json", train)
        evals = write(tmp / "eval.json", rows(GOOD))
        return ["task=triples", f"task.data.train={train_path}", f"task.data.test={evals}", *FIELDS, *SHORT, *extra]

    return make


def ds_json(text: str) -> Callable[[Path], list[str]]:
    """Overrides pointing ``deepspeed.json_file`` at a file with this content."""
    return lambda tmp: [f"deepspeed.json_file={write(tmp / 'ds.json', text)}"]


def fixed(*overrides: str) -> Callable[[Path], list[str]]:
    """Overrides that need no files."""
    return lambda tmp: list(overrides)


def data_dir(tmp: Path) -> list[str]:
    """The train file is a directory."""
    (tmp / "folder.json").mkdir()
    return ["task=triples", f"task.data.train={tmp / 'folder.json'}", f"task.data.test={tmp / 'folder.json'}", *SHORT]


CASES = [
    # config values
    ("steps_zero", fixed("train.steps=0"), "train.steps=0 must be a number > 0"),
    ("batch_negative", fixed("train.micro_batch_size=-4"), "train.micro_batch_size=-4 must be"),
    ("lr_zero", fixed("method.lr=0"), "method.lr=0 must be a number > 0"),
    ("lr_not_a_number", fixed("method.lr=fast"), "method.lr=fast must be a number"),
    ("eval_cap_negative", fixed("eval.max_records=-1"), "eval.max_records=-1 must be null"),
    ("no_room_for_a_prompt", fixed("task.max_length=64"), "leaves no room for a prompt beside eval.max_new_tokens=64"),
    ("schedule_typo", fixed("train.schedule=cosin"), "train.schedule='cosin' must be one of cosine"),
    ("zero_stage", fixed("deepspeed.zero_stage=4"), "deepspeed.zero_stage=4: only ZeRO stage 1 is built"),
    ("dtype_typo", fixed("model.dtype=float33"), "model.dtype='float33' is not a torch dtype"),
    ("local_model_missing", fixed("model.source=local", "model.path=/nonexistent/model"),
     "model.path=/nonexistent/model is not a folder"),
    ("remote_code_not_opted_in", fixed("model.trust_remote_code=true"), "tiny_llama.yaml does not opt in"),
    # the method
    ("freeze_zero", fixed("method=freeze", "method.layers=0"), "method.layers=0 must be in 1..2"),
    ("freeze_too_many", fixed("method=freeze", "method.layers=3"), "method.layers=3 must be in 1..2"),
    ("checkpointing_prefix", fixed("method=prefix_tuning", "train.gradient_checkpointing=true"),
     "train.gradient_checkpointing=true is not supported by method=prefix_tuning"),
    ("virtual_tokens_too_many", fixed("method=prefix_tuning", "method.peft_config.num_virtual_tokens=400"),
     "num_virtual_tokens (400) + task.max_length (192) + eval.max_new_tokens (64) exceeds"),
    ("max_length_too_long", fixed("task.max_length=480"), "max_position_embeddings=512; lower task.max_length to at"),
    ("target_modules_typo", fixed("method.peft_config.target_modules=[q_proj,qq_proj]"),
     "['qq_proj'] match no module of model=tiny_llama"),
    ("peft_config_unknown_key", fixed("+method.peft_config.rank=8"), "does not build peft.LoraConfig"),
    ("builder_unknown", fixed("method.builder=methods.native.nope"), "method.builder=methods.native.nope cannot"),
    ("hook_unknown", fixed("method.hooks.pre_step=methods.hooks.nope"), "method.hooks.pre_step=methods.hooks.nope"),
    ("loader_unknown", fixed("method.loader=methods.loaders.nope"), "method.loader=methods.loaders.nope cannot"),
    # DeepSpeed JSON
    ("ds_json_malformed", ds_json('{\n  "zero_optimization": {"stage": 1},\n  "gradient_clipping" 1.0\n}'),
     "ds.json: malformed JSON at line 3"),
    ("ds_json_missing", fixed("deepspeed.json_file=/nonexistent/ds.json"), "deepspeed.json_file=/nonexistent"),
    ("ds_json_not_object", ds_json("[1, 2]"), "holds a JSON list; expected an object"),
    # data
    ("data_files_not_set", fixed("task=triples"), "task.data.test, task.data.train not set (the YAML says ???)"),
    ("data_file_missing", user_data(None), "missing.json does not exist or is not a file; set task.data.train"),
    ("data_file_is_a_folder", data_dir, "folder.json is a directory, not a file"),
    ("data_not_utf8", user_data(b'[{"text": "\xff\xfe"}]'), "train.json: not UTF-8 text"),
    ("json_malformed", user_data('[\n  {"text": "a", "answer": "a_b_c"},\n  {"text": "b" "answer": "x"}\n]'),
     "train.json: malformed JSON at line 3"),
    ("jsonl_malformed", user_data('{"text": "a", "answer": "a_b_c"}\n{"text": \n'),
     "malformed JSON Lines record at line 2"),
    ("record_missing_keys", user_data(rows(GOOD, {"text": "b"})),
     "train.json record 1: no field ['answer'] (keys: ['text']); fix task.data.fields"),
    ("record_without_reference", lambda tmp: [*user_data(rows(GOOD))(tmp), "task.data.fields=null"],
     "no 'output' field, the reference answer"),
    ("prompt_field_missing", fixed("task.prompt_template='{instruction}{input}{context}'"),
     "the prompt reads field 'context' that the records lack"),
    ("train_split_empty", user_data("[]"), "task.data.train="),
    ("test_split_empty", fixed("task.generator.n_test=0"), "task.generator.n_test=0 gives an empty test split"),
    ("answers_not_triples_strict", user_data(rows(GOOD, {"text": "b", "answer": "only two_parts"}),
                                             "task.data.strict_format=true"),
     "train split: 1 of 2 records have answers that are not head_relation_tail lines "
     "(e.g. record 1: 'only two_parts')"),
    # the task's declarations
    ("tiny_model_without_source_task", fixed("task.base_task=null"), "has no base_task, and a tiny model needs one"),
    ("primary_metric_undeclared", fixed("task.primary_metric=accuracy"),
     "primary_metric=accuracy is not in its metric_list"),
    ("metric_without_direction", fixed("task.metric_list=[{metric:f1_micro}]"), "needs `metric` (a name) and "
     "`higher_is_better`"),
    ("task_module_incomplete", fixed("task.module=bench.core.errors"), "task.module=bench.core.errors has no "
     "['prompt', 'score', 'generate']"),
]


def assert_no_success(out: Path) -> dict:
    """The run's record, which must not say success (absent counts as no success)."""
    path = out / "result.json"
    record = json.loads(path.read_text()) if path.exists() else {}
    assert record.get("run_info", {}).get("status") != "success"
    return record


@pytest.mark.parametrize("name,overrides,fragment", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_invalid_in_seconds(tmp_path: Path, name: str, overrides: Callable, fragment: str) -> None:
    out = tmp_path / "run"
    cfg = compose_cfg(*overrides(tmp_path), f"out_dir={out}")
    start = time.perf_counter()
    code = execute(cfg)
    elapsed = time.perf_counter() - start
    info = assert_no_success(out)["run_info"]
    assert code == 2 and info["status"] == "invalid", info
    assert fragment in info["error"], info["error"]
    assert elapsed < LIMIT_S, f"{name} took {elapsed:.1f} s"
    assert not (out / "tokenizer").exists(), "refused after the model loaded"


def test_out_dir_that_is_a_file_is_invalid_and_left_alone(tmp_path: Path) -> None:
    out = write(tmp_path / "run", "not a folder")
    assert execute(compose_cfg(f"out_dir={out}")) == 2
    assert out.read_text() == "not a folder"


def test_a_deepspeed_json_is_merged_under_extra(tmp_path: Path) -> None:
    from bench.run import _validated

    path = write(tmp_path / "ds.json", '{"wall_clock_breakdown": true, "gradient_clipping": 0.5}')
    cfg = compose_cfg(f"deepspeed.json_file={path}", "+deepspeed.extra.gradient_clipping=2.0", f"out_dir={tmp_path}")
    info: dict = {}
    merged = _validated(cfg, info)
    assert dict(merged.deepspeed.extra) == {"wall_clock_breakdown": True, "gradient_clipping": 2.0}
    assert info["deepspeed_json"]["gradient_clipping"] == 0.5 and info["warnings"] == []
    assert dict(cfg.deepspeed.extra) == {"gradient_clipping": 2.0}      # the caller's config is left as it was


def test_answers_not_triples_only_warn_by_default(tmp_path: Path) -> None:
    bad = rows(GOOD, {"text": "b", "answer": "x_y"}, {"text": "c", "answer": "x_y_z\nno"})
    warnings = validate.check(compose_cfg(*user_data(bad)(tmp_path), f"out_dir={tmp_path / 'run'}"))
    assert len(warnings) == 1 and "2 of 3 records" in warnings[0] and "task.data.strict_format=true" in warnings[0]


def save_random_tiny(path: Path) -> list[str]:
    """A random tiny LLaMA and its character tokenizer saved at ``path``; the overrides that load it."""
    from bench.models import chartok, loading
    from tasks import synth

    tokenizer = chartok.build(r["instruction"] + r["input"] + r["output"] for r in synth.generate(64, 0, "target"))
    loading.build_tiny(compose_cfg().model, len(tokenizer), 0).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return ["model.source=local", f"model.path={path}", "model.arch=null"]


@pytest.fixture(scope="module")
def local_model(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """A ``local`` model needing no cached base (built once per module, untimed), with a small budget."""
    return [*save_random_tiny(tmp_path_factory.mktemp("local_model")), "train.steps=2", "eval.max_records=4"]


LOADED = [
    ("lora_rank_zero", ["method.peft_config.r=0"], "method=lora refused model=tiny_llama: `r` should be"),
    ("target_modules_typo", ["method.peft_config.target_modules=[qkv]"], "['qkv'] match no module"),
    ("max_length_too_long", ["task.max_length=480"], "max_position_embeddings=512; lower task.max_length"),
    ("freeze_layer_prefix", ["method=freeze", "model.layer_prefix=transformer.h"],
     "model.layer_prefix=transformer.h matches no parameter"),
    ("freeze_too_many", ["method=freeze", "method.layers=5"], "method.layers=5 must be in 1..2"),
]


@pytest.mark.parametrize("name,overrides,fragment", LOADED, ids=[c[0] for c in LOADED])
def test_bad_input_found_on_the_loaded_model_is_invalid(tmp_path: Path, local_model: list[str], name: str,
                                                         overrides: list[str], fragment: str) -> None:
    out = tmp_path / "run"
    cfg = compose_cfg(*local_model, *overrides, f"out_dir={out}")
    start = time.perf_counter()
    code = execute(cfg)
    elapsed = time.perf_counter() - start
    info = assert_no_success(out)["run_info"]
    assert code == 2 and info["status"] == "invalid" and fragment in info["error"], info
    assert elapsed < LIMIT_S, f"{name} took {elapsed:.1f} s"


def run_cli(*args: str, launcher: bool = False) -> subprocess.CompletedProcess:
    """``python -m bench.run`` (or through ``deepspeed``) with these arguments."""
    head = deepspeed_cmd() if launcher else [sys.executable, "-m"]
    return subprocess.run([*head, "bench.run", *args], cwd=ROOT, env=child_env(), capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("group", ["model", "method", "task", "deepspeed"])
def test_unknown_name_lists_the_options_and_exits_2(tmp_path: Path, group: str) -> None:
    start = time.perf_counter()
    done = run_cli(f"{group}=nope", f"out_dir={tmp_path / 'run'}")
    assert done.returncode == 2, done.stderr
    assert f"Could not find '{group}/nope'" in done.stderr and f"Available options in '{group}'" in done.stderr
    assert "no result.json was written" in done.stderr and not (tmp_path / "run" / "result.json").exists()
    assert time.perf_counter() - start < LIMIT_S


def test_out_dir_file_on_the_command_line_exits_2(tmp_path: Path) -> None:
    out = write(tmp_path / "run", "x")
    done = run_cli(f"out_dir={out}")
    assert done.returncode == 2 and "File exists" in done.stderr and "could not prepare out_dir" in done.stderr


@pytest.mark.slow
def test_unknown_name_through_the_launcher_exits_non_zero(tmp_path: Path) -> None:
    done = run_cli("method=nope", f"out_dir={tmp_path / 'run'}", launcher=True)
    output = done.stdout + done.stderr
    assert done.returncode == 2, output[-3000:]
    assert "Available options in 'method'" in output and "no result.json was written" in output
