"""Multi-node launches and shared nodes: the hostfile is checked in seconds before any cell, the command a cell
gets carries it, and DeepSpeed's /dev/shm buffers of dead processes are removed while live ones stay."""

from __future__ import annotations

import mmap
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench import sweep
from bench.core.errors import ConfigError
from bench.sweeping import cluster
from bench.sweeping import grid as sweep_grid
from tests.test_sweep import calls, fake, sweep_cfg  # noqa: F401, F811  (fake: the fake cell command fixture)


def test_a_hostfile_cell_command_and_world_size(tmp_path: Path, fake: Path) -> None:  # noqa: F811
    hosts = tmp_path / "hosts"
    hosts.write_text("# the cluster\nnode1 slots=8\nnode2 slots=8   # second node\n")
    cfg = sweep_cfg(tmp_path, fake, "methods=[lora]", "gpus=8", f"hostfile={hosts}",
                    "cell_cmd=[deepspeed,--num_gpus,'${gpus}',--master_port,'29511',"
                    "--no_local_rank,--module,bench.run]")
    head, *rest = sweep.launcher(cfg)     # deepspeed, found beside this interpreter
    assert Path(head).name == "deepspeed" and rest == ["--hostfile", str(hosts), "--num_gpus", "8", "--master_port",
                                                       "29511", "--no_local_rank", "--module", "bench.run"]
    assert sweep_grid.world_size(cfg) == 16 and cluster.hosts(hosts) == {"node1": 8, "node2": 8}


@pytest.mark.parametrize(("text", "message"), [
    ("node1 slots=8\nnode2\n", "line 2: 'node2'; expected `<host> slots=<gpus>`"),
    ("node1 slots=8\nnode1 slots=8\n", "host node1 is listed twice"),
    ("# nothing\n", "names no host"),
    ("node1 slots=4\n", r"\{'node1': 4\} have fewer slots than gpus=8"),
])
def test_a_malformed_hostfile_is_refused(tmp_path: Path, text: str, message: str) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text(text)
    with pytest.raises(ConfigError, match=message):
        cluster.check_hostfile(hosts, gpus=8)


def test_unreachable_hosts_or_a_missing_pdsh_fail_in_seconds(tmp_path: Path, monkeypatch) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("no-such-node-1.invalid slots=1\nno-such-node-2.invalid slots=1\n")
    start = time.perf_counter()
    monkeypatch.setattr(cluster.shutil, "which", lambda tool: f"/usr/bin/{tool}")   # as if pdsh were installed
    with pytest.raises(ConfigError, match=r"not reachable by ssh.*ssh-copy-id"):
        cluster.check_hostfile(hosts, gpus=1)
    assert time.perf_counter() - start <= 10
    monkeypatch.setattr(cluster.shutil, "which", lambda tool: None if tool == "pdsh" else f"/usr/bin/{tool}")
    with pytest.raises(ConfigError, match="pdsh not found on PATH; install pdsh"):
        cluster.check_hostfile(hosts, gpus=1)


def test_a_sweep_with_a_bad_hostfile_stops_before_any_cell(tmp_path: Path, fake: Path) -> None:  # noqa: F811
    cfg = sweep_cfg(tmp_path, fake, "methods=[lora]", f"hostfile={tmp_path / 'missing'}")
    assert sweep.run_sweep(cfg) == 2 and calls(tmp_path) == []


def test_dead_buffers_are_removed_and_live_ones_stay(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(cluster, "SETTLE_S", 0.0)
    prefix = f"{cluster.PREFIX}{os.getuid()}_"
    dead, live = tmp_path / f"{prefix}127.0.0.1_1_0", tmp_path / f"{prefix}127.0.0.1_2_0"
    other = tmp_path / f"{cluster.PREFIX}{os.getuid() + 1}_127.0.0.1_3_0"    # another user's: never touched
    for path in (dead, live, other):
        path.write_bytes(b"\0" * 4096)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import mmap, sys, time\n"
        f"f = open({str(live)!r}, 'r+b'); m = mmap.mmap(f.fileno(), 4096)\n"
        "print('mapped', flush=True); time.sleep(60)")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "mapped"
        assert str(live) in cluster.mapped_buffers()
        assert cluster.remove_dead_buffers(tmp_path) == 1
        assert not dead.exists() and live.exists() and other.exists()
    finally:
        holder.kill()
        holder.wait()
    assert cluster.remove_dead_buffers(tmp_path) == 1 and not live.exists()   # its process is gone now
    assert mmap   # the holder maps with mmap, as DeepSpeed's shm op does
