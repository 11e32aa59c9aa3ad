#!/usr/bin/python3
"""A random Llama GGUF (~120 MB) big enough that generating its 4096-token context takes tens
of seconds even with fast kernels (for the kill test). usage: make_slow_model.py OUT.gguf"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reference"))

import gguf_write  # noqa: E402
from llama_model import LlamaConfig, random_model  # noqa: E402

cfg = LlamaConfig(dim=512, hidden_dim=1408, n_layers=8, n_heads=8, n_kv_heads=4, vocab_size=4000, context_length=4096)
gguf_write.write_llama(sys.argv[1], cfg, random_model(cfg, 5), "F32")
print(f"wrote {sys.argv[1]}")
