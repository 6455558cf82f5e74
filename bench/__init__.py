"""peftbench: benchmark parameter-efficient fine-tuning methods against each other."""

import atexit
import logging
import os
import socket
import sys

from omegaconf import OmegaConf

from bench.core.startup import sitecustomize as startup


def free_port() -> int:
    """A TCP port free right now: a rendezvous that does not fight another deepspeed job for 29500."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def exit_now(code: int) -> None:
    """End a process once everything is recorded: Python's exit handlers run (the shared-memory buffer's removal,
    log flushing), the interpreter's teardown of torch, transformers and peft does not (1.7–3.3 s of a launched
    cell's wall time, measured; nothing is left to write by then)."""
    atexit._run_exitfuncs()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


# DeepSpeed's autotuner, which no run uses, tries ``import mlflow`` while ``import deepspeed`` runs: 1.5 s of every
# process's start where mlflow is installed (measured: 3.4 s vs 1.9 s for ``import deepspeed``). Only that import is
# refused in bench's processes; the launcher's own processes get the same finder at their start (the module's doc).
startup.install()
OmegaConf.register_new_resolver("fraction", lambda n, f: int(int(n) * float(f)), replace=True)
OmegaConf.register_new_resolver("free_port", free_port, use_cache=False, replace=True)
# ${times:${method.lr},10}: a method's per-group learning rate as a multiple of its own, so a learning-rate search
# (which sets method.lr) moves every group of the method together.
OmegaConf.register_new_resolver("times", lambda x, f: float(x) * float(f), replace=True)
