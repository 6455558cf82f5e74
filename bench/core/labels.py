"""Names every report module shares: the methods' order and colours, the kinds of memory; no imports of bench.

Below report, plots and compare, so none of them imports another for these.
"""

from __future__ import annotations

import zlib
from typing import Iterable

# One colour per method, in the order tables and figures list methods (colour-blind safe first).
METHOD_COLORS: dict[str, str] = {
    "full": "#222222", "freeze": "#8c8c8c", "prompt_tuning": "#e69f00", "p_tuning": "#d55e00",
    "prefix_tuning": "#cc79a7", "p_tuning_v2": "#7b4fa0", "lora": "#0072b2", "adalora": "#56b4e9",
    "vblora": "#009e73",
}
_SPARE = ("#bcbd22", "#17becf", "#8c564b", "#e377c2", "#9edae5", "#393b79")
MEM_KINDS = {"cpu_peak_rss": "CPU peak RSS", "cpu_rss_train_peak": "CPU RSS", "cuda_allocated": "CUDA allocated"}


def method_label(name: str, bits: int | None) -> str:
    """How tables, folders and the grid name a method on a k-bit base: ``lora@4bit`` (``name`` on a full one)."""
    return f"{name}@{bits}bit" if bits else name


def parse_label(label: str) -> tuple[str, int | None]:
    """``lora@4bit`` → ("lora", 4); ``lora`` → ("lora", None); anything else after "@" is a ValueError."""
    name, at, quant = label.partition("@")
    if not at:
        return name, None
    if not (quant.endswith("bit") and quant[:-3].isdigit()):
        raise ValueError(f"method {label!r}: after '@' give the base's bits, e.g. {name}@4bit or {name}@8bit")
    return name, int(quant[:-3])


def color(method: str) -> str:
    """The method's fixed colour; a method not listed (or on a k-bit base) gets a spare colour chosen by its name."""
    return METHOD_COLORS.get(method) or _SPARE[zlib.crc32(method.encode()) % len(_SPARE)]


def method_order(methods: Iterable[str]) -> list[str]:
    """Methods in ``METHOD_COLORS`` order (each before its k-bit variants), unknown ones after them alphabetically."""
    rank = {m: i for i, m in enumerate(METHOD_COLORS)}
    return sorted(set(methods), key=lambda m: (rank.get(m.partition("@")[0], len(rank)), m.partition("@")[0], m))
