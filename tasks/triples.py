"""Triple extraction: load records, build prompts, parse ``head_relation_tail`` lines, score."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tasks import synth

Record = dict[str, str]
KEY_SHAPES = (("instruction", "input", "output"), ("text", "answer"))


class DataError(ValueError):
    """A data file or record the task cannot use; the message names the file and the fix."""


def _read_json_records(path: Path) -> list[Any]:
    """A JSON list or JSON Lines file; errors name the file and line."""
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        try:
            return json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}: malformed JSON at line {err.lineno}, column {err.colno}: {err.msg}") from err
    records = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise DataError(f"{path}: malformed JSON Lines record at line {lineno}: {err.msg}") from err
    return records


def normalize(raw: Any, *, instruction: str, where: str) -> Record:
    """Bring either key shape to ``{instruction, input, output}``."""
    if isinstance(raw, dict) and all(k in raw for k in KEY_SHAPES[0]):
        return {k: str(raw[k]) for k in KEY_SHAPES[0]}
    if isinstance(raw, dict) and all(k in raw for k in KEY_SHAPES[1]):
        return {"instruction": instruction, "input": str(raw["text"]), "output": str(raw["answer"])}
    keys = sorted(raw) if isinstance(raw, dict) else type(raw).__name__
    raise DataError(f"{where}: record has keys {keys}; expected {list(KEY_SHAPES[0])} or {list(KEY_SHAPES[1])}")


def load_file(path: str | Path, *, instruction: str) -> list[Record]:
    """All records of a user's data file, validated."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file {path} does not exist or is not a file; set task.train_file/task.eval_file")
    return [normalize(r, instruction=instruction, where=f"{path} record {i}") for i, r in enumerate(_read_json_records(path))]


def load_split(task: Any, split: str) -> list[Record]:
    """The ``train`` or ``eval`` split: generated when the task has a generator, else read from its file."""
    gen = task.get("generator")
    if gen:
        n = gen.n_train if split == "train" else gen.n_eval
        seed = gen.seed if split == "train" else gen.seed + 1_000_003
        return synth.generate(n, seed, gen.schema)
    records = load_file(task[f"{split}_file"], instruction=task.instruction)
    limit = task.get(f"max_{split}_records")
    records = records[:limit] if limit else records
    if not records:
        raise DataError(f"task.{split}_file={task[f'{split}_file']} has no records")
    return records


def prompt(record: Record, task_cfg: Any) -> str:
    """The model's input text; the answer follows it directly."""
    return task_cfg.prompt_template.format(instruction=record["instruction"], input=record["input"])


def parse(text: str) -> tuple[list[tuple[str, str, str]], int]:
    """Triples in a generated answer, and the number of non-empty lines that did not split into three."""
    triples, bad = [], 0
    for line in text.split("\n"):
        line = line.strip()
        if not line:
            continue
        parts = line.split("_")
        if len(parts) == 3:
            triples.append(tuple(parts))
        else:
            bad += 1
    return triples, bad


def _prf(n_pred: int, n_gold: int, n_hit: int) -> tuple[float, float, float]:
    p = n_hit / n_pred if n_pred else 0.0
    r = n_hit / n_gold if n_gold else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def _record_f1(pred: set, gold: set) -> float:
    """The seed's per-record F1; two empty sets agree perfectly."""
    if not pred and not gold:
        return 1.0
    return _prf(len(pred), len(gold), len(pred & gold))[2]


def score(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Micro P/R/F1 over all triples, the seed's macro (per-record) F1, exact match, parse-failure rate."""
    n_pred = n_gold = n_hit = exact = unparsed = 0
    macro = []
    for pred_text, gold_text in zip(predictions, references, strict=True):
        pred_list, bad = parse(pred_text)
        pred, gold = set(pred_list), set(parse(gold_text)[0])
        n_pred, n_gold, n_hit = n_pred + len(pred), n_gold + len(gold), n_hit + len(pred & gold)
        macro.append(_record_f1(pred, gold))
        exact += pred == gold and bad == 0
        unparsed += bad > 0
    p, r, f1 = _prf(n_pred, n_gold, n_hit)
    n = len(references)
    return {
        "precision": p, "recall": r, "f1_micro": f1, "f1_macro": sum(macro) / n if n else 0.0,
        "exact_match": exact / n if n else 0.0, "parse_fail_rate": unparsed / n if n else 0.0, "n": n,
    }
