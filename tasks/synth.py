"""Deterministic synthetic corpus of Chinese automotive-fault texts with head_relation_tail answers.

The same generator serves two schemas: ``target`` (the seed's four relations, head first) and
``source`` (renamed relations, head and tail swapped, its own instruction) used to pre-train tiny
bases, so a benchmark adapts a base to a new schema the way a real LLM would be adapted.
"""

from __future__ import annotations

import random

PARTS = [
    "发动机", "风扇", "水泵", "节温器", "散热器", "火花塞", "点火线圈", "喷油嘴", "燃油泵", "蓄电池",
    "发电机", "起动机", "离合器", "变速箱", "刹车片", "制动盘", "转向泵", "转向灯", "雨刮", "空调压缩机",
    "冷凝器", "氧传感器", "节气门", "曲轴", "凸轮轴", "活塞环", "气门", "正时皮带", "减震器", "轮毂轴承",
    "继电器", "保险丝", "仪表盘", "冷却器", "油泵", "开关",
]
PART_FAULTS = [
    "不工作", "异响", "漏油", "磨损严重", "烧蚀", "松动", "不亮", "卡滞", "断裂", "损坏", "短路", "老化",
    "过热", "抖动", "失效", "渗水", "堵塞", "变形", "常亮", "不起作用", "低速转动", "接触不良",
]
METRICS = ["水温", "油压", "转速", "油耗", "电压", "怠速", "动力", "排放", "胎压", "油温", "电流", "温度"]
PERF_FAULTS = ["过高", "过低", "不稳", "偏高", "不足", "异常", "波动", "为零", "超标", "下降"]
WHOLES = ["发动机", "冷却系统", "点火系统", "燃油系统", "制动系统", "转向系统", "空调系统", "变速器", "底盘", "电气系统"]
TOOLS = ["万用表", "示波器", "诊断仪", "压力表", "红外测温仪", "内窥镜", "绝缘电阻表", "听诊器", "烟雾检测仪"]
TOOL_OBJECTS = ["电压", "油压", "绝缘电阻", "温度", "缸压", "电流", "故障码", "泄漏", "电阻"]
BRANDS = ["捷达", "桑塔纳", "帕萨特", "凯美瑞", "雅阁", "卡罗拉", "宝来", "猎豹", "哈弗", "朗逸"]
OPENERS = ["故障现象：", "一辆{year}年{brand}轿车，行驶里程{km}km。", "{n}号故障报告：", "车主反映：", ""]

TARGET_RELATIONS = {"part": "部件故障", "perf": "性能故障", "compose": "组成", "tool": "检测工具"}
SOURCE_RELATIONS = {"part": "故障部件", "perf": "异常指标", "compose": "包含", "tool": "被检测于"}
INSTRUCTIONS = {
    "target": "抽取三元组（部件故障、性能故障、组成、检测工具），格式头_关系_尾：",
    "source": "反向抽取关系（故障部件、异常指标、包含、被检测于），格式尾_关系_头：",
}

PART_TEMPLATES = ["{h}{t}", "{h}出现{t}", "检查发现{h}{t}", "{h}已经{t}", "{h}有{t}现象"]
PERF_TEMPLATES = ["{h}{t}", "{h}明显{t}", "测得{h}{t}"]
COMPOSE_TEMPLATES = ["{w}的{h}{t}", "{w}中的{h}{t}"]
TOOL_TEMPLATES = ["用{tool}检测{obj}", "使用{tool}测量{obj}", "{tool}检查{obj}"]


def _fact(rng: random.Random) -> tuple[str, list[tuple[str, str, str]]]:
    """One clause of text and the (head, relation key, tail) facts it states."""
    kind = rng.choices(["part", "perf", "compose", "tool"], weights=[5, 2, 2, 1])[0]
    if kind == "part":
        h, t = rng.choice(PARTS), rng.choice(PART_FAULTS)
        return rng.choice(PART_TEMPLATES).format(h=h, t=t), [(h, "part", t)]
    if kind == "perf":
        h, t = rng.choice(METRICS), rng.choice(PERF_FAULTS)
        return rng.choice(PERF_TEMPLATES).format(h=h, t=t), [(h, "perf", t)]
    if kind == "compose":
        h, t, w = rng.choice(PARTS), rng.choice(PART_FAULTS), rng.choice(WHOLES)
        text = rng.choice(COMPOSE_TEMPLATES).format(w=w, h=h, t=t)
        return text, [(h, "compose", w), (h, "part", t)]
    tool, obj = rng.choice(TOOLS), rng.choice(TOOL_OBJECTS)
    return rng.choice(TOOL_TEMPLATES).format(tool=tool, obj=obj), [(tool, "tool", obj)]


def _answer(facts: list[tuple[str, str, str]], schema: str) -> str:
    """Render facts in a schema: target keeps head first, source swaps head and tail."""
    names = TARGET_RELATIONS if schema == "target" else SOURCE_RELATIONS
    lines = []
    for head, rel, tail in facts:
        first, last = (head, tail) if schema == "target" else (tail, head)
        line = f"{first}_{names[rel]}_{last}"
        if line not in lines:
            lines.append(line)
    return "\n".join(lines)


def record(rng: random.Random, schema: str) -> dict[str, str]:
    """One ``{instruction, input, output}`` record."""
    opener = rng.choice(OPENERS).format(
        year=rng.randint(2003, 2022), brand=rng.choice(BRANDS), km=rng.randint(1, 30) * 1000, n=rng.randint(1, 999)
    )
    clauses, facts = [], []
    for _ in range(rng.choice([1, 2, 2, 3])):
        text, new = _fact(rng)
        clauses.append(text)
        facts.extend(new)
    return {"instruction": INSTRUCTIONS[schema], "input": opener + "，".join(clauses) + "。", "output": _answer(facts, schema)}


def generate(n: int, seed: int, schema: str = "target") -> list[dict[str, str]]:
    """``n`` records, identical for the same ``(n, seed, schema)``; texts do not depend on the schema."""
    if schema not in INSTRUCTIONS:
        raise ValueError(f"task.generator.schema={schema!r} is not one of {sorted(INSTRUCTIONS)}")
    rng = random.Random(seed)
    return [record(rng, schema) for _ in range(n)]
