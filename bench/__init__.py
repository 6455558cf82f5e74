"""peftbench: benchmark parameter-efficient fine-tuning methods against each other."""

from omegaconf import OmegaConf

OmegaConf.register_new_resolver("fraction", lambda n, f: int(int(n) * float(f)), replace=True)
