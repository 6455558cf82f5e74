"""The bare loop ``bench.perf`` holds the harness against: plain transformers + PEFT + DeepSpeed, nothing of ours.

``python -m bench.bare MODEL_DIR BATCHES.pt OUT.json [--peft ADAPTER_CONFIG_DIR] [--lr LR]`` loads the model,
puts the PEFT config on it (none: full fine-tuning), builds the same ZeRO-1 engine as a run (``--ds`` JSON) and times
forward, backward and step over ready-made batches. ``--random`` builds MODEL_DIR's config with random weights on the
device instead (a replica, as the harness's ``model.source=replica``), in ``--dtype``. On a GPU the batches move to
it one step at a time, as the harness's do, and the clock reads after a synchronize at the start and the end only.
No harness setting applies here: no malloc thresholds, no
per-step loss bookkeeping, no hooks, no progress bar. It imports nothing from bench/, so what it measures is the
libraries' own speed.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import time


def main() -> None:
    """Train over the batches once and write the seconds of every step."""
    args = argparse.ArgumentParser()
    args.add_argument("model_dir")
    args.add_argument("batches")
    args.add_argument("out")
    args.add_argument("--peft", default=None)
    args.add_argument("--lr", type=float, default=1e-3)
    args.add_argument("--ds", required=True, help="the DeepSpeed config as JSON text")
    args.add_argument("--random", action="store_true", help="MODEL_DIR's config with random weights, on the device")
    args.add_argument("--dtype", default="float32", help="the weights' dtype (DeepSpeed casts to its precision)")
    opts = args.parse_args()
    import deepspeed
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    for key, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1"}.items():
        os.environ.setdefault(key, value)
    if "MASTER_PORT" not in os.environ:
        with socket.socket() as probe:   # a free port: another process group may hold DeepSpeed's default
            probe.bind(("127.0.0.1", 0))
            os.environ["MASTER_PORT"] = str(probe.getsockname()[1])
    dtype = getattr(torch, opts.dtype)
    device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    if opts.random:
        torch.manual_seed(0)
        with device:
            model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(opts.model_dir), dtype=dtype,
                                                     attn_implementation="sdpa")
    else:
        model = AutoModelForCausalLM.from_pretrained(opts.model_dir, dtype=dtype, attn_implementation="sdpa")
    if opts.peft:
        from peft import PeftConfig, get_peft_model

        model = get_peft_model(model, PeftConfig.from_pretrained(opts.peft))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=opts.lr)
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=json.loads(opts.ds))
    batches = torch.load(opts.batches)
    engine.train()
    seconds = []
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    begun = time.perf_counter()
    for batch in batches:
        start = time.perf_counter()
        loss = engine(**{k: v.to(engine.device) for k, v in batch.items()}).loss
        engine.backward(loss)
        engine.step()
        seconds.append(time.perf_counter() - start)
    sync()
    with open(opts.out, "w", encoding="utf-8") as fh:
        json.dump({"step_seconds": seconds, "steps": len(seconds), "total_s": time.perf_counter() - begun,
                   "device": str(device), "params": sum(p.numel() for p in model.parameters())}, fh)
    os._exit(0)   # what there is to measure is written; the interpreter's teardown is not the loop's time


if __name__ == "__main__":
    main()
