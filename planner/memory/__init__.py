"""The trainer-side memory model: one module per term, each a small pure function in bytes.

    process.py       non-PyTorch process memory (CUDA context, kernel modules)
    weights.py       weights in bf16/fp16/fp32, NF4 (with/without double quant), int8
    lora.py          LoRA adapter parameters (rank, target modules)
    optimizer.py     optimizer state and the step's temporaries (bitsandbytes 8-bit block-wise, paged; torch
                     AdamW foreach, for-loop, fused)
    gradients.py     gradients held during backward
    activations.py   saved activations with and without gradient checkpointing
    logprob_head.py  TRL's log-prob head: fused tiled head (current) or full logits (older)
    allocator.py     the caching allocator's reserve over what is allocated
    trainer.py       TrainerSetup -> TrainerMemory: the step's moments; the peak is the largest
"""
