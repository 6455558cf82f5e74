"""The harness against the bare loop on one GPU, on replicas of real shapes: ``python -m bench.gpuperf``
(``make perf-gpu``; ``scripts/gpu_perf.sh`` on a bare GPU machine; conf/perf_gpu.yaml).

Each case is a launched ``bench.run`` cell (``model.source=replica``: random weights of the published shape, built on
the GPU) and ``bench.bare`` over the same batches on the same GPU (the same replica config, random weights, the
run's DeepSpeed JSON). Reported: seconds per step, training tokens/s (padding excluded), the harness/bare ratio, and
MFU = FLOP/s ÷ ``perf.peak_flops``, with FLOP per token = 4·N + 2·min(T, N): N the base's parameters without its
input embedding (a lookup), T the trainable parameters; forward 2N, input gradients 2N, weight gradients 2 per
trained weight: 6N for full fine-tuning, ≈ 4N for a frozen base with an adapter. Attention's score FLOPs
(∝ sequence length) are not counted, so MFU is a slight underestimate. Both sides' times include the first step.
Without a GPU it refuses, unless ``perf.dry_run=true`` (scaled-down shapes on CPU: the plumbing, not the numbers).
Writes ``results/perf/gpu.json`` and ``results/perf/gpu.md``.
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

import bench  # noqa: F401  (registers config resolvers)
from bench import perf
from bench.core import results
from bench.core.errors import ConfigError
from bench.models import loading, replica

log = logging.getLogger(__name__)
OUT = perf.OUT


def base_params(base: torch.nn.Module) -> int:
    """N: the base's parameters without its input embedding (a lookup, no FLOP)."""
    skip = base.get_input_embeddings().weight
    return sum(p.numel() for p in base.parameters() if p is not skip)


def flops_per_token(n: int, trainable: int) -> int:
    """FLOP per training token: forward 2N, input gradients 2N, weight gradients 2 per trained weight (at most N)."""
    return 4 * n + 2 * min(trainable, n)


def case_inputs(cfg: DictConfig, folder: Path, steps: int) -> dict[str, Any]:
    """The replica's config saved for the bare loop, the batches, the PEFT config and DeepSpeed JSON, the FLOP count;
    the model itself is built on the meta device only (the GPU stays free for the two processes measured)."""
    tok = replica.tokenizer(cfg)
    conf = replica.config(cfg.model, tok)
    conf.save_pretrained(folder / "model")
    with torch.device("meta"):
        base = loading.auto_class(cfg.model).from_config(conf, dtype=getattr(torch, str(cfg.model.dtype)))
        n = base_params(base)
    peft_dir, ds, tokens, trainable = perf.save_inputs(cfg, folder, steps, tok, base)   # batches: CPU tensors
    return {"peft_dir": peft_dir, "ds": ds, "tokens": tokens, "flops_per_token": flops_per_token(n, trainable),
            "n_base": n, "trainable_params": trainable, "model_dir": folder / "model"}


def run_case(case: Any, pcfg: Any) -> dict[str, Any]:
    """One case: harness and bare loop, ``repeats`` times interleaved; medians of seconds per step."""
    overrides = [f"model={case.model}", f"method={case.method}", "model.source=replica", *case.overrides,
                 *pcfg.shrink]
    cfg = perf._compose(*overrides)
    steps, repeats = int(case.get("steps") or pcfg.steps), int(case.get("repeats") or pcfg.repeats)
    folder = OUT / "gpu" / str(case.name)
    found = case_inputs(cfg, folder, steps)
    sides: dict[str, list[float]] = {"harness": [], "bare": []}
    peaks = []
    for rep in range(repeats):
        record = perf._launch([*overrides, f"train.steps={steps}", *pcfg.harness_overrides], folder / f"harness{rep}")
        sides["harness"].append(record["train_info"]["train_time_s"] / steps)
        peaks.append(record["train_info"].get("peak_mem_bytes"))
        perf._bare(found["model_dir"], folder, found["peft_dir"], found["ds"], float(cfg.method.lr),
                   ("--random", "--dtype", str(cfg.model.dtype)))
        sides["bare"].append(json.loads((folder / "bare.json").read_text())["total_s"] / steps)
        log.info("%s repeat %d: %s", case.name, rep, {k: f"{1000 * v[-1]:.1f} ms" for k, v in sides.items()})
    med = {k: statistics.median(v) for k, v in sides.items()}
    per_step = found["tokens"] / steps
    tps = {k: per_step / v for k, v in med.items()}
    peak = float(pcfg.peak_flops)
    return {"name": case.name, "model": case.model, "method": case.method, "steps": steps, "repeats": repeats,
            "tokens_per_step": per_step, "n_base": found["n_base"], "trainable_params": found["trainable_params"],
            "flops_per_token": found["flops_per_token"], **{f"{k}_step_s": v for k, v in med.items()},
            "ratio": med["harness"] / med["bare"], "tokens_per_s": tps,
            "mfu": {k: v * found["flops_per_token"] / peak for k, v in tps.items()},
            "harness_peak_mem_bytes": peaks[-1], "samples": sides}


def table(report: dict[str, Any]) -> str:
    """The cases as Markdown, the FLOP count and peak stated under them."""
    lines = ["| case | N (base, no embedding) | FLOP/token | tokens/step | bare ms/step | harness ms/step | ratio "
             "| bare tokens/s | harness tokens/s | bare MFU | harness MFU |", "|---|" + "---:|" * 10]
    lines += [f"| {r['name']} | {r['n_base'] / 1e9:.3f}B | {r['flops_per_token'] / 1e9:.2f} G "
              f"| {r['tokens_per_step']:.0f} "
              f"| {1000 * r['bare_step_s']:.1f} | {1000 * r['harness_step_s']:.1f} | {r['ratio']:.3f} "
              f"| {r['tokens_per_s']['bare']:,.0f} | {r['tokens_per_s']['harness']:,.0f} "
              f"| {r['mfu']['bare']:.1%} | {r['mfu']['harness']:.1%} |" for r in report["cases"]]
    meta = report["meta"]
    lines += ["", f"Device: {meta['device']}; peak {meta['peak_flops'] / 1e12:.0f} TFLOP/s ({meta['peak_note']}). "
              "FLOP/token = 4·N + 2·min(T, N) (T: trainable parameters): 6N full, ≈ 4N with a frozen base; attention "
              "scores not counted." + (" DRY RUN on CPU: scaled-down shapes, the numbers mean nothing." if
                                       meta["dry_run"] else "")]
    return "\n".join(lines)


@hydra.main(config_path="../conf", config_name="perf_gpu", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Measure every case and write ``results/perf/gpu.json`` and ``gpu.md``."""
    pcfg = cfg.perf
    if not torch.cuda.is_available() and not pcfg.dry_run:
        raise ConfigError("bench.gpuperf measures on a GPU and none is visible; perf.dry_run=true runs its plumbing "
                          "on CPU with the shapes perf.shrink scales down (scripts/gpu_perf.sh DRY_RUN=1)")
    start = time.perf_counter()
    cases = [run_case(case, pcfg) for case in pcfg.cases]
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    report = {"cases": cases, "meta": {"device": device, "peak_flops": float(pcfg.peak_flops),
                                       "peak_note": str(pcfg.peak_note), "dry_run": bool(pcfg.dry_run),
                                       "wall_s": time.perf_counter() - start, "versions": results.versions(),
                                       "config": OmegaConf.to_container(pcfg, resolve=True)}}
    results.write_json(OUT / "gpu.json", report)
    (OUT / "gpu.md").write_text(table(report) + "\n", encoding="utf-8")
    log.info("results/perf/gpu.json (%.0f s)\n%s", report["meta"]["wall_s"], table(report))


if __name__ == "__main__":
    main()
