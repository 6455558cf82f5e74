"""Deterministic synthetic corpus of automotive-fault texts with head_relation_tail answers, in Chinese or English.

The same generator serves two schemas: ``target`` (the seed's four relations, head first) and
``source`` (renamed relations, head and tail swapped, its own instruction) used to pre-train tiny
bases, so a benchmark adapts a base to a new schema the way a real LLM would be adapted.

Each language is one ``Vocabulary`` drawn from in the same way. The Chinese (``zh``) stream is the committed
regression baseline: its lists, their order and the draws must not change. English (``en``) records are short (one
to three clauses, at most four answer lines) so a small pretrained LLM learns them on a CPU in minutes, and a tiny
model's character tokenizer fits them in its positions.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from bench.core.errors import ConfigError


@dataclass(frozen=True)
class Vocabulary:
    """The words, clause templates and schema texts of one language; no entry of a triple may contain "_"."""

    parts: list[str]
    part_faults: list[str]
    metrics: list[str]
    perf_faults: list[str]
    wholes: list[str]
    tools: list[str]
    tool_objects: list[str]
    brands: list[str]
    openers: list[str]
    part_templates: list[str]
    perf_templates: list[str]
    compose_templates: list[str]
    tool_templates: list[str]
    target_relations: dict[str, str]
    source_relations: dict[str, str]
    instructions: dict[str, str]
    joiner: str      # between clauses
    end: str         # after the last clause
    max_facts: int = 0   # no clause is added once a record states this many facts (0: no cap)


ZH = Vocabulary(
    parts=[
        "发动机", "风扇", "水泵", "节温器", "散热器", "火花塞", "点火线圈", "喷油嘴", "燃油泵", "蓄电池",
        "发电机", "起动机", "离合器", "变速箱", "刹车片", "制动盘", "转向泵", "转向灯", "雨刮", "空调压缩机",
        "冷凝器", "氧传感器", "节气门", "曲轴", "凸轮轴", "活塞环", "气门", "正时皮带", "减震器", "轮毂轴承",
        "继电器", "保险丝", "仪表盘", "冷却器", "油泵", "开关",
    ],
    part_faults=[
        "不工作", "异响", "漏油", "磨损严重", "烧蚀", "松动", "不亮", "卡滞", "断裂", "损坏", "短路", "老化",
        "过热", "抖动", "失效", "渗水", "堵塞", "变形", "常亮", "不起作用", "低速转动", "接触不良",
    ],
    metrics=["水温", "油压", "转速", "油耗", "电压", "怠速", "动力", "排放", "胎压", "油温", "电流", "温度"],
    perf_faults=["过高", "过低", "不稳", "偏高", "不足", "异常", "波动", "为零", "超标", "下降"],
    wholes=["发动机", "冷却系统", "点火系统", "燃油系统", "制动系统", "转向系统", "空调系统", "变速器", "底盘", "电气系统"],
    tools=["万用表", "示波器", "诊断仪", "压力表", "红外测温仪", "内窥镜", "绝缘电阻表", "听诊器", "烟雾检测仪"],
    tool_objects=["电压", "油压", "绝缘电阻", "温度", "缸压", "电流", "故障码", "泄漏", "电阻"],
    brands=["捷达", "桑塔纳", "帕萨特", "凯美瑞", "雅阁", "卡罗拉", "宝来", "猎豹", "哈弗", "朗逸"],
    openers=["故障现象：", "一辆{year}年{brand}轿车，行驶里程{km}km。", "{n}号故障报告：", "车主反映：", ""],
    part_templates=["{h}{t}", "{h}出现{t}", "检查发现{h}{t}", "{h}已经{t}", "{h}有{t}现象"],
    perf_templates=["{h}{t}", "{h}明显{t}", "测得{h}{t}"],
    compose_templates=["{w}的{h}{t}", "{w}中的{h}{t}"],
    tool_templates=["用{tool}检测{obj}", "使用{tool}测量{obj}", "{tool}检查{obj}"],
    target_relations={"part": "部件故障", "perf": "性能故障", "compose": "组成", "tool": "检测工具"},
    source_relations={"part": "故障部件", "perf": "异常指标", "compose": "包含", "tool": "被检测于"},
    instructions={
        "target": "抽取三元组（部件故障、性能故障、组成、检测工具），格式头_关系_尾：",
        "source": "反向抽取关系（故障部件、异常指标、包含、被检测于），格式尾_关系_头：",
    },
    joiner="，",
    end="。",
)

# Faults are states ("worn", "leaking oil") so every template reads as English and each tail is a span of the text.
# Words and relation names are short: a tiny model's character tokenizer spends one token per character.
EN = Vocabulary(
    parts=[
        "engine", "fan", "water pump", "thermostat", "radiator", "spark plug", "ignition coil", "injector",
        "fuel pump", "battery", "alternator", "starter", "clutch", "gearbox", "brake pad", "brake disc",
        "steering pump", "turn signal", "wiper", "compressor", "condenser", "O2 sensor", "throttle",
        "crankshaft", "camshaft", "piston ring", "valve", "timing belt", "shock", "hub bearing", "relay",
        "fuse", "dashboard", "oil cooler", "oil pump", "switch",
    ],
    part_faults=[
        "dead", "noisy", "leaking oil", "badly worn", "burnt", "loose", "not lit", "stuck", "cracked", "broken",
        "shorted", "aged", "overheating", "shaking", "failed", "seeping", "clogged", "bent", "always on",
        "unresponsive", "sluggish", "intermittent",
    ],
    metrics=["coolant temp", "oil pressure", "rpm", "fuel use", "voltage", "idle", "power", "emissions",
             "fuel trim", "oil temp", "current", "temperature"],
    perf_faults=["too high", "too low", "unstable", "high", "weak", "abnormal", "erratic", "zero", "over limit",
                 "dropping"],
    wholes=["powertrain", "cooling", "ignition", "fuel system", "brake system", "steering", "AC system",
            "drivetrain", "chassis", "electrics"],
    tools=["multimeter", "oscilloscope", "scan tool", "gauge", "thermometer", "borescope", "megger", "stethoscope",
           "smoke tester"],
    tool_objects=["voltage", "oil pressure", "insulation", "temperature", "compression", "current", "fault codes",
                  "leaks", "resistance"],
    brands=["Jetta", "Golf", "Passat", "Camry", "Accord", "Corolla", "Civic", "Focus", "Tucson", "Outback"],
    openers=["Symptom: ", "{brand}, {km} km: ", "Report {n}: ", "Owner says: ", ""],
    part_templates=["{h} {t}", "the {h} is {t}", "found the {h} {t}", "{h} was {t}", "noticed the {h} {t}"],
    perf_templates=["{h} {t}", "{h} is {t}", "measured {h} {t}"],
    compose_templates=["{w} {h} {t}", "the {w} {h} is {t}"],
    tool_templates=["used the {tool} on {obj}", "tested {obj} via {tool}", "{tool} test of {obj}"],
    target_relations={"part": "part-fault", "perf": "perf-fault", "compose": "part-of", "tool": "test-tool"},
    source_relations={"part": "fault-of", "perf": "state-of", "compose": "contains", "tool": "tested-by"},
    instructions={
        "target": "Triples head_relation_tail: part-fault, perf-fault, part-of, test-tool.",
        "source": "Triples tail_relation_head: fault-of, state-of, contains, tested-by.",
    },
    joiner=", ",
    end=".",
    max_facts=3,     # at most four answer lines (3 facts + a two-fact clause); clauses stay one to three
)

LANGUAGES = {"zh": ZH, "en": EN}
SCHEMAS = ("target", "source")


def _fact(rng: random.Random, vocab: Vocabulary) -> tuple[str, list[tuple[str, str, str]]]:
    """One clause of text and the (head, relation key, tail) facts it states."""
    kind = rng.choices(["part", "perf", "compose", "tool"], weights=[5, 2, 2, 1])[0]
    if kind == "part":
        h, t = rng.choice(vocab.parts), rng.choice(vocab.part_faults)
        return rng.choice(vocab.part_templates).format(h=h, t=t), [(h, "part", t)]
    if kind == "perf":
        h, t = rng.choice(vocab.metrics), rng.choice(vocab.perf_faults)
        return rng.choice(vocab.perf_templates).format(h=h, t=t), [(h, "perf", t)]
    if kind == "compose":
        h, t, w = rng.choice(vocab.parts), rng.choice(vocab.part_faults), rng.choice(vocab.wholes)
        text = rng.choice(vocab.compose_templates).format(w=w, h=h, t=t)
        return text, [(h, "compose", w), (h, "part", t)]
    tool, obj = rng.choice(vocab.tools), rng.choice(vocab.tool_objects)
    return rng.choice(vocab.tool_templates).format(tool=tool, obj=obj), [(tool, "tool", obj)]


def _answer(facts: list[tuple[str, str, str]], schema: str, vocab: Vocabulary) -> str:
    """Render facts in a schema: target keeps head first, source swaps head and tail."""
    names = vocab.target_relations if schema == "target" else vocab.source_relations
    lines = []
    for head, rel, tail in facts:
        first, last = (head, tail) if schema == "target" else (tail, head)
        line = f"{first}_{names[rel]}_{last}"
        if line not in lines:
            lines.append(line)
    return "\n".join(lines)


def record(rng: random.Random, schema: str, vocab: Vocabulary = ZH) -> dict[str, str]:
    """One ``{instruction, input, output}`` record."""
    opener = rng.choice(vocab.openers).format(
        year=rng.randint(2003, 2022), brand=rng.choice(vocab.brands), km=rng.randint(1, 30) * 1000,
        n=rng.randint(1, 999),
    )
    clauses, facts = [], []
    for _ in range(rng.choice([1, 2, 2, 3])):
        if vocab.max_facts and len(facts) >= vocab.max_facts:
            break
        text, new = _fact(rng, vocab)
        clauses.append(text)
        facts.extend(new)
    text = opener + vocab.joiner.join(clauses) + vocab.end
    return {"instruction": vocab.instructions[schema], "input": text, "output": _answer(facts, schema, vocab)}


def generate(n: int, seed: int, schema: str = "target", *, language: str = "zh") -> list[dict[str, str]]:
    """``n`` records, identical for the same ``(n, seed, schema, language)``; texts do not depend on the schema."""
    if schema not in SCHEMAS:
        raise ConfigError(f"task.generator.schema={schema!r} is not one of {list(SCHEMAS)}; set one of them")
    if language not in LANGUAGES:
        raise ConfigError(f"task.generator.language={language!r} is not one of {sorted(LANGUAGES)}; set one of them "
                         "(zh when absent)")
    rng = random.Random(seed)
    return [record(rng, schema, LANGUAGES[language]) for _ in range(n)]
