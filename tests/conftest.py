import os

# Never let a test reach the network (Hub lookups for unknown ids fail fast instead).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
