"""One YAML adds a method: the docs' example (IA3, docs/methods.md "Adding a method"), written as the one file it
says, is discovered by the default sweep, trains, and what it reports is what its saved adapter gives."""

from __future__ import annotations

import re
import shutil
import statistics
from pathlib import Path

from hydra import compose, initialize_config_dir

from bench.sweeping import grid
from tests.conftest import CONF, ROOT, TINY
from tests.test_methods import reproduce, run


def docs_example() -> tuple[str, str]:
    """The method's name and YAML text, as the docs show them."""
    found = re.search(r"```yaml\n(# conf/method/(\w+)\.yaml\n.*?)```", (ROOT / "docs/methods.md").read_text(), re.S)
    assert found, "docs/methods.md no longer shows a method YAML under '# conf/method/<name>.yaml'"
    return found.group(2), found.group(1)


def test_the_docs_method_example_is_one_file_that_trains_and_reloads(tmp_path: Path, cache_dir: Path, monkeypatch):
    name, text = docs_example()
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    (conf / "method" / f"{name}.yaml").write_text(text)
    monkeypatch.setattr(grid, "CONF_DIR", conf)
    with initialize_config_dir(str(conf), version_base="1.3"):
        sweep = compose("sweep")
        cfg = compose("config", overrides=[*TINY, f"method={name}", f"cache_dir={cache_dir}",
                                           f"out_dir={tmp_path / 'run'}"])
    assert name in {cell.method for cell in grid.grid(sweep)}, "the default sweep does not discover the new YAML"
    result = run(cfg)
    curve = result["train_info"]["loss_curve"]
    assert statistics.mean(curve[-3:]) < statistics.mean(curve[:3]), f"{name}'s loss did not fall: {curve}"
    assert 0 < result["train_info"]["trainable_params"] < result["train_info"]["total_params"]
    report = reproduce(Path(cfg.out_dir), 1, 8)
    assert report["ok"], report
