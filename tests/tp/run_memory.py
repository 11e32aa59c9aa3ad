#!/usr/bin/python3
"""Shard-only loading: each rank's resident memory after load is about 1/N of the model.
Writes a ~200 MB F32 model, runs 1, 2 and 4 ranks and reads the per-rank resident sizes the
engine reports; each must be at most RSS(1 rank)/N plus a fixed 40 MiB (runtime, MPI).

usage: run_memory.py --infernode BIN --work DIR"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reference"))

import gguf_write  # noqa: E402
import mpi_util  # noqa: E402
from llama_model import LlamaConfig, random_model  # noqa: E402

SLACK_MIB = 40


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--infernode", required=True)
    ap.add_argument("--work", required=True)
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    model = os.path.join(a.work, "mem.gguf")
    cfg = LlamaConfig(dim=768, hidden_dim=2048, n_layers=8, n_heads=12, n_kv_heads=4, vocab_size=8000,
                      context_length=256)
    gguf_write.write_llama(model, cfg, random_model(cfg, 1), "F32")
    size = os.path.getsize(model) / 2**20
    return 1 if mpi_util.check_shard_memory(a.infernode, model, f"model {size:.0f} MiB", SLACK_MIB) else 0


if __name__ == "__main__":
    sys.exit(main())
