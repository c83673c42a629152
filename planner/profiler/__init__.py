"""The profiler behind ``plan profile``: measure what the analytic memory model predicts.

    trace.py    one GRPO step traced on the CPU with meta tensors (no GPU, no weights): the live
                tensor bytes at every aten op, with the CUDA kernels' memory behaviour substituted
                where the CPU kernels differ (SDPA, TRL's fused head, NF4 matmuls)
    measure.py  the same step on a real GPU, every figure of data/calibration/README.md, written
                as a calibration profile (planner/memory/calibration.py reads it)
    fit.py      per-model coefficients from measured rows (least squares, pure Python)

Nothing here imports torch at module level; torch, transformers, PEFT, TRL and bitsandbytes are
imported inside the functions that need them.
"""
