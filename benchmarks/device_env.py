"""What a GPU machine has, for the measuring scripts (gpu_profile.sh, gpu_heldout.sh): the versions
of every package a measured step imports, CUDA, and whether TRL's fused head imports. A missing
package prints ``MISSING``; the scripts stop on it and say which package to install."""

import importlib

for name in ("torch", "transformers", "peft", "accelerate", "trl", "bitsandbytes", "datasets"):
    try:
        m = importlib.import_module(name)
        print(f"{name} {getattr(m, '__version__', '?')}")
    except Exception as e:  # noqa: BLE001
        print(f"{name} MISSING ({type(e).__name__}: {e})")
import torch  # noqa: E402

print("cuda available:", torch.cuda.is_available(), torch.version.cuda,
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
import trl.trainer.utils  # noqa: E402  - the fused head must import (needs datasets)

print("trl fused head:", hasattr(trl.trainer.utils, "add_fused_lm_head"))
