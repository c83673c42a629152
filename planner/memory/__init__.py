"""The trainer-side memory model: one module per term, each a small pure function in bytes.

    process.py       non-PyTorch process memory (CUDA context, kernel modules)
    weights.py       weights in bf16/fp16/fp32, NF4 (with/without double quant), int8
    lora.py          LoRA adapter parameters (rank, target modules)
    optimizer.py     optimizer state (bitsandbytes 8-bit block-wise, torch AdamW, paged)
    gradients.py     gradients held during backward
    activations.py   saved activations with and without gradient checkpointing
    logprob_head.py  TRL's log-prob head: fused tiled head (current) or full logits (older)
    allocator.py     the caching allocator's reserve over what is allocated
    trainer.py       TrainerSetup -> TrainerMemory: the terms summed into the step's peak
"""
