"""Triple extraction: load records, build prompts, parse ``head_relation_tail`` lines, score."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.validate import InputError
from tasks import synth

Record = dict[str, str]
KEY_SHAPES = (("instruction", "input", "output"), ("text", "answer"))


class DataError(InputError):
    """A data file or record the task cannot use; the message names the file and the fix."""


def _read_text(path: Path) -> str:
    """The file as UTF-8 text; a file that cannot be read is a ``DataError`` naming it."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text (bad byte at offset {err.start}); save it as UTF-8 JSON") from err
    except OSError as err:
        raise DataError(f"{path}: cannot be read ({err.strerror or err}); check the path and its permissions") from err


def _read_json_records(path: Path) -> list[Any]:
    """A JSON list or JSON Lines file; errors name the file and line."""
    text = _read_text(path)
    if text.lstrip().startswith("["):
        try:
            return json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}: malformed JSON at line {err.lineno}, column {err.colno}: {err.msg}; "
                            "fix the file (a JSON list or one JSON object per line)") from err
    records = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise DataError(f"{path}: malformed JSON Lines record at line {lineno}, column {err.colno}: "
                                f"{err.msg}; fix that line (one JSON object per line)") from err
    return records


def normalize(raw: Any, *, instruction: str, where: str) -> Record:
    """Bring either key shape to ``{instruction, input, output}``."""
    if isinstance(raw, dict) and all(k in raw for k in KEY_SHAPES[0]):
        return {k: str(raw[k]) for k in KEY_SHAPES[0]}
    if isinstance(raw, dict) and all(k in raw for k in KEY_SHAPES[1]):
        return {"instruction": instruction, "input": str(raw["text"]), "output": str(raw["answer"])}
    keys = sorted(raw) if isinstance(raw, dict) else type(raw).__name__
    raise DataError(f"{where}: record has keys {keys}; expected {list(KEY_SHAPES[0])} or {list(KEY_SHAPES[1])}")


def load_file(path: str | Path, *, instruction: str, field: str = "task.train_file/task.eval_file") -> list[Record]:
    """All records of a user's data file, validated; ``field`` is the config key the path came from."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{field}={path} is a directory, not a file; point it at a JSON or JSON Lines file")
    if not path.is_file():
        raise DataError(f"data file {path} does not exist or is not a file; set {field} to an existing file")
    raw = _read_json_records(path)
    if not isinstance(raw, list):
        raise DataError(f"{path}: the JSON is a {type(raw).__name__}; expected a list of records (or JSON Lines)")
    return [normalize(r, instruction=instruction, where=f"{path} record {i}") for i, r in enumerate(raw)]


def load_split(task: Any, split: str) -> list[Record]:
    """The ``train`` or ``eval`` split: generated when the task has a generator, else read from its file."""
    gen = task.get("generator")
    if gen:
        n = gen.n_train if split == "train" else gen.n_eval
        if int(n) <= 0:
            raise DataError(f"task.generator.n_{split}={n} gives an empty {split} split; set it > 0")
        seed = gen.seed if split == "train" else gen.seed + 1_000_003
        return synth.generate(n, seed, gen.schema, language=gen.get("language", "zh"))
    records = load_file(task[f"{split}_file"], instruction=task.instruction, field=f"task.{split}_file")
    limit = task.get(f"max_{split}_records")
    records = records[:limit] if limit else records
    if not records:
        raise DataError(f"task.{split}_file={task[f'{split}_file']} has no records; the {split} split must not be "
                        "empty")
    return records


def format_problems(records: list[Record]) -> tuple[int, list[str]]:
    """How many records have answer lines that are not ``head_relation_tail``, and a few such lines."""
    count, examples = 0, []
    for i, record in enumerate(records):
        lines = (line.strip() for line in record["output"].split("\n"))
        bad = [line for line in lines if line and len(line.split("_")) != 3]
        count += bool(bad)
        examples += [f"record {i}: {line!r}" for line in bad][: max(0, 3 - len(examples))]
    return count, examples


def check(task: Any) -> list[str]:
    """Both splits load, are non-empty and hold ``head_relation_tail`` answers; returns warnings.

    Answers in another format are a warning (scored as unparseable) unless ``task.strict_format`` is true.
    """
    warnings = []
    for split in ("train", "eval"):
        records = load_split(task, split)
        count, examples = format_problems(records)
        if not count:
            continue
        where = f"task.{split}_file={task.get(f'{split}_file')}" if not task.get("generator") else f"{split} split"
        text = (f"{where}: {count} of {len(records)} records have answer lines that are not head_relation_tail "
                f"(e.g. {'; '.join(examples)})")
        if task.get("strict_format"):
            raise DataError(f"{text}; fix those lines, or set task.strict_format=false to only warn")
        warnings.append(f"{text}; they score as unparseable; task.strict_format=true refuses such data")
    return warnings


def prompt(record: Record, task_cfg: Any) -> str:
    """The model's input text; the answer follows it directly."""
    return task_cfg.prompt_template.format(instruction=record["instruction"], input=record["input"])


def parse(text: str) -> tuple[list[tuple[str, str, str]], int]:
    """Triples in an answer, and the number of non-empty lines that did not split into three.

    Each part is stripped: " a _ r _ b " is the triple a_r_b, so spacing around "_" never costs a match.
    """
    triples, bad = [], 0
    for line in text.split("\n"):
        line = line.strip()
        if not line:
            continue
        parts = line.split("_")
        if len(parts) == 3:
            triples.append(tuple(p.strip() for p in parts))
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
    """Micro P/R/F1 over all triples, the seed's macro (per-record) F1, exact match, parse-failure rate.

    ``gold_parse_fail`` counts the reference lines that are not head_relation_tail (a count of lines over the
    whole eval set, not a rate): they hold no gold triple, so a model cannot be credited for them, and the number
    says how much of the reference the scores could not see (``check`` warns about such data before a run).
    """
    n_pred = n_gold = n_hit = exact = unparsed = gold_bad = 0
    macro = []
    for pred_text, gold_text in zip(predictions, references, strict=True):
        pred_list, bad = parse(pred_text)
        gold_list, bad_gold = parse(gold_text)
        pred, gold = set(pred_list), set(gold_list)
        n_pred, n_gold, n_hit = n_pred + len(pred), n_gold + len(gold), n_hit + len(pred & gold)
        macro.append(_record_f1(pred, gold))
        exact += pred == gold and bad == 0
        unparsed += bad > 0
        gold_bad += bad_gold
    p, r, f1 = _prf(n_pred, n_gold, n_hit)
    n = len(references)
    return {
        "precision": p, "recall": r, "f1_micro": f1, "f1_macro": sum(macro) / n if n else 0.0,
        "exact_match": exact / n if n else 0.0, "parse_fail_rate": unparsed / n if n else 0.0, "n": n,
        "gold_parse_fail": gold_bad,
    }
