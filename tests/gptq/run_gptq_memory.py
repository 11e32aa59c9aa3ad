#!/usr/bin/python3
"""Shard-only loading of a GPTQ checkpoint: each rank's resident memory after load is about 1/N
of the model (DESIGN.md, "Weights are loaded as shards"), as tests/tp/run_memory.py checks for
an F32 GGUF. Writes a ~165 MiB GPTQ directory (4-bit, groups of 128 in plain order, so that
every matrix splits at 2 and 4 ranks) with tests/reference/gptq_write.py's writer, runs 1, 2
and 4 ranks and reads the per-rank resident sizes the engine reports; each must be at most
RSS(1 rank)/N plus a fixed 40 MiB (runtime, MPI, the mapped embedding).

The layers' integers, scales and zero points are drawn at random instead of quantizing float
weights (that alone would take half a minute here): what is measured is where the converted
4-bit values live, not what they compute (tests/gptq/run_gptq.py checks that).

usage: run_gptq_memory.py --infernode BIN --work DIR"""
import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, os.path.join(HERE, "..", "reference"))
sys.path.insert(0, os.path.join(HERE, "..", "tp"))

import numpy as np  # noqa: E402

import dtypes  # noqa: E402
import gptq_write  # noqa: E402
import mpi_util  # noqa: E402
from llama_model import LlamaConfig, hf_shapes  # noqa: E402
from safetensors_write import hf_config  # noqa: E402

SLACK_MIB = 40
GROUP = 128
# 7 layers of 46M weights each (q/o 2048x2048, k/v 1024x2048, gate/up/down 5504x2048): 162 MiB
# of 4-bit values; the tied embedding (1024 x 2048 f16) is 4 MiB.
CFG = LlamaConfig(dim=2048, hidden_dim=5504, n_layers=7, n_heads=16, n_kv_heads=8, vocab_size=1024,
                  context_length=256, tied=True)


def random_linear(rng, n_out, n_in):
    """A random 4-bit layer: values 0..15, fp16 scales, asymmetric zero points 1..15."""
    n_groups = n_in // GROUP
    return gptq_write.QLinear(
        q=rng.integers(0, 16, (n_out, n_in), dtype=np.uint8),
        scales=(rng.uniform(0.5, 1.5, (n_groups, n_out)) / (8 * np.sqrt(n_in))).astype(np.float16),
        zeros=rng.integers(1, 16, (n_groups, n_out), dtype=np.uint8),
        g_idx=(np.arange(n_in) // GROUP).astype(np.int32))


def write_checkpoint(directory):
    opts = gptq_write.Options(group_size=GROUP, sym=False)
    rng = np.random.default_rng(7)
    entries = []
    for name, shape in hf_shapes(CFG).items():
        prefix = name[:-len(".weight")]
        if prefix.endswith(gptq_write.LINEAR_SUFFIXES):
            entries += gptq_write.linear_entries(prefix, random_linear(rng, *shape), zero_offset=1)
        elif len(shape) == 1:
            entries.append((name, "F32", shape, dtypes.encode(rng.uniform(0.7, 1.3, shape), "F32")))
        else:
            entries.append((name, "F16", shape, dtypes.encode(0.3 * rng.standard_normal(shape), "F16")))
    gptq_write.write_dir(directory, hf_config(CFG, "F16"), entries, gptq_write.quant_config(opts))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--infernode", required=True)
    ap.add_argument("--work", required=True)
    a = ap.parse_args()
    model = os.path.join(a.work, "gptq-mem")
    write_checkpoint(model)
    size = os.path.getsize(os.path.join(model, "model.safetensors")) / 2**20
    return 1 if mpi_util.check_shard_memory(a.infernode, model, f"GPTQ checkpoint {size:.0f} MiB", SLACK_MIB) else 0


if __name__ == "__main__":
    sys.exit(main())
