"""Fault-clause classification: one clause of a fault report in, the label of its kind out, scored by accuracy.

Built on tasks/synth.py's vocabularies: a clause of each kind (part fault, performance fault, a part within a
system, a test tool) reads as synth writes it, but kinds are drawn uniformly so the four classes are balanced.
The label is the kind's relation name in the generator's schema, so a tiny base pre-trained on the ``source``
names must learn new names for the same clauses, as a triple task's base learns a new schema.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from typing import Any

from omegaconf import OmegaConf

from bench.core.errors import ConfigError, DataError
from tasks import synth

Record = dict[str, str]
KINDS = ("part", "perf", "compose", "tool")   # drawn uniformly: balanced classes


def vocabulary(gen: Any) -> synth.Vocabulary:
    """The generator's language; checked here so a typo fails before any record is drawn."""
    language = gen.get("language") or "zh"
    if language not in synth.LANGUAGES:
        raise ConfigError(f"task.generator.language={language!r} is not one of {sorted(synth.LANGUAGES)}; set one "
                          "of them (zh when absent)")
    return synth.LANGUAGES[language]


def relation_names(gen: Any) -> dict[str, str]:
    """Kind → label in the generator's schema and language: the source schema renames every label."""
    schema = gen.get("schema") or "target"
    if schema not in synth.SCHEMAS:
        raise ConfigError(f"task.generator.schema={schema!r} is not one of {list(synth.SCHEMAS)}; set one of them")
    vocab = vocabulary(gen)
    return dict(vocab.target_relations if schema == "target" else vocab.source_relations)


def _declared_labels(task_cfg: Any) -> list[str] | None:
    """The label set the config fixes: the generator's names, else ``task.labels``; None when neither says."""
    if task_cfg.get("generator"):
        return list(relation_names(task_cfg.generator).values())
    declared = task_cfg.get("labels")
    if declared is None:
        return None
    if isinstance(declared, str) or not isinstance(declared, Sequence) or not declared:
        raise ConfigError(f"task.labels={declared!r} is not a non-empty list; give the label set as a list, "
                          "e.g. task.labels=[a,b], or null to take the references' labels")
    return [str(label) for label in declared]


def labels(task_cfg: Any, references: Sequence[str] = ()) -> list[str]:
    """The answers that count as valid: the declared set, else the labels the references hold."""
    declared = _declared_labels(task_cfg)
    return declared if declared is not None else sorted(set(references))


def _instruction(task_cfg: Any) -> str:
    """The text before each input; the source task's comes from ``base_task.instruction`` (merged over the task)."""
    instruction = task_cfg.get("instruction")
    if not isinstance(instruction, str) or not instruction:
        raise ConfigError(f"task.instruction={instruction!r} is not a text; set it to the instruction before each "
                          "input (task.base_task.instruction for the source task), naming the labels")
    return instruction


def _clause(rng: random.Random, vocab: synth.Vocabulary, kind: str) -> str:
    """One clause of ``kind``, drawn as synth draws it; a compose clause states the part's system and fault."""
    if kind == "part":
        return rng.choice(vocab.part_templates).format(h=rng.choice(vocab.parts), t=rng.choice(vocab.part_faults))
    if kind == "perf":
        return rng.choice(vocab.perf_templates).format(h=rng.choice(vocab.metrics), t=rng.choice(vocab.perf_faults))
    if kind == "compose":
        h, t, w = rng.choice(vocab.parts), rng.choice(vocab.part_faults), rng.choice(vocab.wholes)
        return rng.choice(vocab.compose_templates).format(w=w, h=h, t=t)
    return rng.choice(vocab.tool_templates).format(tool=rng.choice(vocab.tools), obj=rng.choice(vocab.tool_objects))


def _input(rng: random.Random, vocab: synth.Vocabulary, kind: str) -> str:
    """An optional opener, the clause and the end mark, as synth.record frames its texts."""
    opener = rng.choice(vocab.openers).format(
        year=rng.randint(2003, 2022), brand=rng.choice(vocab.brands), km=rng.randint(1, 30) * 1000,
        n=rng.randint(1, 999),
    )
    return opener + _clause(rng, vocab, kind) + vocab.end


def generate(task_cfg: Any, *, n: int, seed: int) -> list[Record]:
    """``n`` records, identical for the same arguments; the schema changes only the labels, never the texts."""
    gen = task_cfg.generator
    vocab, names, instruction = vocabulary(gen), relation_names(gen), _instruction(task_cfg)
    rng = random.Random(seed)
    records = []
    for _ in range(n):
        kind = rng.choice(KINDS)
        records.append({"instruction": instruction, "input": _input(rng, vocab, kind), "output": names[kind]})
    return records


def prompt(record: Record, task_cfg: Any) -> str:
    """The model's input text; the label follows it directly. Records from files may carry no instruction."""
    return task_cfg.prompt_template.format(instruction=record.get("instruction", task_cfg.instruction),
                                           input=record["input"])


def parse(text: str) -> str:
    """The answer's first non-empty line, stripped: a model that goes on after its label is still read."""
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def _share(count: int, n: int) -> float:
    """A rate that is 0 on an empty split rather than a ZeroDivisionError."""
    return count / n if n else 0.0


def macro_f1(answers: Sequence[str], references: Sequence[str]) -> float:
    """Mean per-label F1 over the labels the references hold: every class weighs the same, however rare."""
    hits = Counter(r for a, r in zip(answers, references, strict=True) if a == r)
    predicted, gold = Counter(answers), Counter(references)
    f1s = [2 * hits[label] / (predicted[label] + gold[label]) for label in gold]
    return sum(f1s) / len(f1s) if f1s else 0.0


def score(predictions: list[str], references: list[str], task_cfg: Any) -> dict[str, float]:
    """Accuracy, macro F1 and the share of answers that are no label at all (a format failure, not a confusion)."""
    totals: Counter = Counter()
    for prediction, reference in zip(predictions, references, strict=True):
        totals.update(record_stats(prediction, reference, task_cfg))
    return from_stats({"n": 0, "hit": 0, **totals}, task_cfg)


def record_stats(prediction: str, reference: str, task_cfg: Any) -> dict[str, float]:
    """One record's additive counts (``from_stats`` of their sum is ``score``): a bootstrap resamples these."""
    answer = parse(prediction)
    return {"n": 1, "hit": float(answer == reference), f"pred\t{answer}": 1, f"gold\t{reference}": 1,
            **({f"hit\t{reference}": 1} if answer == reference else {})}


def from_stats(totals: dict[str, float], task_cfg: Any) -> dict[str, float]:
    """``score``'s metrics from summed ``record_stats``: the labels are the declared ones, else those the
    references (here: with a count above 0) hold, as ``score`` reads them."""
    counts: dict[str, Counter] = {"pred": Counter(), "gold": Counter(), "hit": Counter()}
    for key, value in totals.items():
        kind, _, label = key.partition("\t")
        if kind in counts and value:
            counts[kind][label] = value
    known = set(_declared_labels(task_cfg) or sorted(counts["gold"]))
    n = int(totals["n"])
    f1s = [2 * counts["hit"][label] / (counts["pred"][label] + counts["gold"][label]) for label in counts["gold"]]
    return {"accuracy": _share(totals["hit"], n), "macro_f1": sum(f1s) / len(f1s) if f1s else 0.0,
            "invalid_rate": _share(sum(v for label, v in counts["pred"].items() if label not in known), n), "n": n}


def _bad_references(records: list[Record], known: set[str]) -> list[tuple[int, str]]:
    """References no answer can match: not a label, or not one clean line (an answer is read as its first line)."""
    return [(i, r["output"]) for i, r in enumerate(records)
            if r["output"] not in known or parse(r["output"]) != r["output"]]


def _instruction_warnings(task_cfg: Any) -> list[str]:
    """A generated task whose instruction omits a label (e.g. the source task without its own instruction).

    Only generated records all carry ``task.instruction``; a file's records may bring their own.
    """
    instruction = task_cfg.get("instruction")
    if not task_cfg.get("generator") or not isinstance(instruction, str):
        return []
    missing = [label for label in relation_names(task_cfg.generator).values() if label not in instruction]
    if not missing:
        return []
    return [f"task {task_cfg.get('name')}: task.instruction does not name the labels {missing}; the model must guess "
            "them (for the source task set task.base_task.instruction)"]


def check(task_cfg: Any, splits: dict[str, list[Record]]) -> list[str]:
    """References that are not one of the labels: warnings, or a ``DataError`` under ``data.strict_format``."""
    known = set(labels(task_cfg, [r["output"] for records in splits.values() for r in records]))
    warnings = _instruction_warnings(task_cfg)
    strict = bool(OmegaConf.select(task_cfg, "data.strict_format", default=False))
    for split, records in splits.items():
        bad = _bad_references(records, known)
        if not bad:
            continue
        examples = "; ".join(f"record {i}: {ref!r}" for i, ref in bad[:3])
        shown = sorted(known)[:8] + (["…"] if len(known) > 8 else [])
        text = (f"task {task_cfg.get('name')}, {split} split: {len(bad)} of {len(records)} references are not one "
                f"line holding one of the labels {shown} (e.g. {examples})")
        if strict:
            raise DataError(f"{text}; fix those records or list their labels in task.labels, or set "
                             "task.data.strict_format=false to only warn")
        warnings.append(f"{text}; no answer can match them; task.data.strict_format=true refuses such data")
    return warnings
