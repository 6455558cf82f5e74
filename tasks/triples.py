"""Triple extraction: prompts, answers as ``head<sep>relation<sep>tail`` lines (or a JSON list), P/R/F1 scoring.

``task.answer`` sets the answer form: ``format: lines`` with a ``separator`` (the seed's ``_`` by default; pick
another, e.g. `` | ``, when labels or entities contain ``_``, as ``Work_For`` does) or ``format: json``, a JSON
list of ``[head, relation, tail]``. References are parsed by the same rule as predictions.
"""

from __future__ import annotations

import json
from typing import Any, Iterable

from bench.core.errors import ConfigError, DataError
from tasks import synth

Record = dict[str, str]
Triple = tuple[str, str, str]
FORMATS = ("lines", "json")


def _form(task_cfg: Any) -> tuple[str, str]:
    """The answer format and separator of the task (the seed's lines joined by ``_`` when unset)."""
    answer = task_cfg.get("answer") or {}
    form, sep = str(answer.get("format", "lines")), str(answer.get("separator", "_"))
    if form not in FORMATS:
        raise ConfigError(f"task.answer.format={form!r} is not one of {list(FORMATS)}")
    if form == "lines" and (not sep.strip() or "\n" in sep):
        raise ConfigError(f"task.answer.separator={sep!r} must hold a visible character and no newline")
    return form, sep


def render(triples: Iterable[Triple], task_cfg: Any) -> str:
    """Triples as an answer text in the task's format."""
    form, sep = _form(task_cfg)
    triples = list(triples)
    if form == "json":
        return json.dumps([list(t) for t in triples], ensure_ascii=False)
    return "\n".join(sep.join(t) for t in triples)


def generate(task_cfg: Any, *, n: int, seed: int) -> list[Record]:
    """Synthetic records (bench/taskdata/splits.py asks for each split with its own seed), answers in the task's
    format."""
    gen = task_cfg.generator
    records = synth.generate(n, seed, gen.schema, language=gen.get("language", "zh"))
    if _form(task_cfg) == ("lines", "_"):
        return records                    # synth writes this form; its entries never hold "_"
    return [{**r, "output": render(parse(r["output"], None)[0], task_cfg)} for r in records]


def format_problems(records: list[Record], task_cfg: Any) -> tuple[int, list[str]]:
    """How many records have answers the task's format cannot parse, and a few such answers."""
    count, examples = 0, []
    for i, record in enumerate(records):
        bad = parse(record["output"], task_cfg)[1]
        count += bool(bad)
        if bad and len(examples) < 3:
            examples.append(f"record {i}: {record['output'][:80]!r}")
    return count, examples


def check(task_cfg: Any, splits: dict[str, list[Record]]) -> list[str]:
    """Answers the format cannot parse are a warning (scored as unparseable) unless ``task.data.strict_format``."""
    form, sep = _form(task_cfg)
    shape = "a JSON list of [head, relation, tail]" if form == "json" else f"head{sep}relation{sep}tail lines"
    warnings = []
    for split, records in splits.items():
        count, examples = format_problems(records, task_cfg)
        if not count:
            continue
        text = (f"task {task_cfg.name}, {split} split: {count} of {len(records)} records have answers that are not "
                f"{shape} (e.g. {'; '.join(examples)})")
        if (task_cfg.get("data") or {}).get("strict_format"):
            raise DataError(f"{text}; fix them, or set task.data.strict_format=false to only warn")
        warnings.append(f"{text}; they score as unparseable; task.data.strict_format=true refuses such data")
    return warnings


def prompt(record: Record, task_cfg: Any) -> str:
    """The model's input text; the answer follows it directly."""
    return task_cfg.prompt_template.format(**{**record, "instruction": record.get("instruction", task_cfg.instruction)})


def _json_triples(text: str) -> tuple[list[Triple], int]:
    """Triples of a JSON answer; an answer that is not a JSON list counts as one bad line, a bad item as one."""
    try:
        items = json.loads(text) if text.strip() else []
    except json.JSONDecodeError:
        return [], 1
    if not isinstance(items, list):
        return [], 1
    good = [tuple(str(p).strip() for p in item) for item in items if isinstance(item, list) and len(item) == 3]
    return good, len(items) - len(good)


def parse(text: str, task_cfg: Any = None) -> tuple[list[Triple], int]:
    """Triples in an answer, and the number of non-empty lines (JSON items) that are not a triple.

    Each part is stripped: " a _ r _ b " is the triple a_r_b, so spacing around the separator never costs a match.
    ``task_cfg`` None: the seed's ``_`` lines.
    """
    form, sep = _form(task_cfg) if task_cfg is not None else ("lines", "_")
    if form == "json":
        return _json_triples(text)
    triples, bad = [], 0
    for line in text.split("\n"):
        line = line.strip()
        if not line:
            continue
        parts = line.split(sep)
        if len(parts) == 3:
            triples.append(tuple(p.strip() for p in parts))
        else:
            bad += 1
    return triples, bad


def _prf(n_pred: int, n_gold: int, n_hit: int) -> tuple[float, float, float]:
    """Precision, recall and F1 from counts; 0 where a count is 0."""
    p = n_hit / n_pred if n_pred else 0.0
    r = n_hit / n_gold if n_gold else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def _record_f1(pred: set, gold: set) -> float:
    """The seed's per-record F1; two empty sets agree perfectly."""
    if not pred and not gold:
        return 1.0
    return _prf(len(pred), len(gold), len(pred & gold))[2]


Parsed = tuple[list[Any], int]   # an answer's items and how many of its lines (items) could not be read


def score(predictions: list[str], references: list[str], task_cfg: Any = None) -> dict[str, float]:
    """The metrics of ``metric_list`` for answers in the task's format (``score_parsed`` on its parser)."""
    return score_parsed([parse(p, task_cfg) for p in predictions], [parse(r, task_cfg) for r in references])


def record_stats(prediction: str, reference: str, task_cfg: Any = None) -> dict[str, float]:
    """One record's additive counts: ``from_stats`` of their sum over records is ``score`` of those records, so a
    bootstrap resamples counts instead of re-parsing answers (bench/taskdata/taskcfg.py ``scorer``)."""
    return parsed_stats(parse(prediction, task_cfg), parse(reference, task_cfg))


def parsed_stats(prediction: Parsed, reference: Parsed) -> dict[str, float]:
    """The counts of one parsed record: items predicted, gold and hit, its F1, exact match, parse failures."""
    (pred_list, bad), (gold_list, bad_gold) = prediction, reference
    pred, gold = set(pred_list), set(gold_list)
    return {"n": 1, "pred": len(pred), "gold": len(gold), "hit": len(pred & gold), "record_f1": _record_f1(pred, gold),
            "exact": float(pred == gold and bad == 0), "unparsed": float(bad > 0), "gold_bad": bad_gold}


def from_stats(totals: dict[str, float], task_cfg: Any = None) -> dict[str, float]:
    """Micro P/R/F1 over all items, the seed's macro (per-record) F1, exact match, parse-failure rate from summed
    ``record_stats``.

    ``gold_parse_fail`` counts the reference lines that could not be parsed (a count of lines over the whole test
    split, not a rate): they hold no gold item, so a model cannot be credited for them, and the number says how
    much of the reference the scores could not see (``check`` warns about such data before a run).
    """
    p, r, f1 = _prf(totals["pred"], totals["gold"], totals["hit"])
    n = int(totals["n"])
    return {
        "precision": p, "recall": r, "f1_micro": f1, "f1_macro": totals["record_f1"] / n if n else 0.0,
        "exact_match": totals["exact"] / n if n else 0.0, "parse_fail_rate": totals["unparsed"] / n if n else 0.0,
        "n": n, "gold_parse_fail": int(totals["gold_bad"]),
    }


def score_parsed(predictions: list[Parsed], references: list[Parsed]) -> dict[str, float]:
    """``from_stats`` of the records' summed counts, for any parser whose items are hashable: another extraction
    task scores its own parse with this."""
    totals: dict[str, float] = dict.fromkeys(("n", "pred", "gold", "hit", "record_f1", "exact", "unparsed",
                                              "gold_bad"), 0)
    for pred, gold in zip(predictions, references, strict=True):
        for key, value in parsed_stats(pred, gold).items():
            totals[key] += value
    return from_stats(totals)
