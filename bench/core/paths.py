"""Where the checkout's folders are: one place for every module that reads the configs, the locks or git."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = ROOT / "conf"
LOCK_DIR = ROOT / "requirements"
CACHE_ROOT = ROOT / ".cache" / "peftbench"   # the checkout's own cache (the op builds; run caches follow cache_dir)
