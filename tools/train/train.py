#!/usr/bin/python3
"""Trains one model of the default pair (PRESETS in model.py) on the tokenized training split.

Deterministic given the seed and the thread count: fixed initialisation seed, batches drawn
from a seeded NumPy generator, a fixed number of steps (not a wall-clock budget), fixed
torch thread count. Matmuls run under torch.autocast('cpu', dtype=torch.bfloat16) (about
100x faster than fp32 here, on AMX); master weights, norms, softmax and the loss are fp32.

Writes OUT/ckpt.pt every --ckpt-every steps (model, optimizer, step, RNG state; a run that
is started again resumes from it), OUT/loss.tsv (step, tokens, train loss, lr, tokens/s,
elapsed s) and, every --eval-every steps, the held-out loss on a fixed set of windows to
OUT/eval.tsv (reported, never used to choose anything). OUT/model.pt is the final model.

  train.py --preset target --data DIR --out OUT --steps N [--batch 16] [--lr 2e-3]
"""
import argparse
import dataclasses
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

import model as M


def lr_at(step, steps, peak, warmup, decay_frac=0.2, floor=0.05):
    """Warmup, then constant, then a linear decay to floor x peak over the last decay_frac
    of the steps. Until the decay starts the schedule does not depend on the total number
    of steps, so a run can be continued with a larger --steps and end exactly as a run
    started with that --steps would."""
    if step < warmup:
        return peak * (step + 1) / warmup
    decay_start = int(steps * (1 - decay_frac))
    if step < decay_start:
        return peak
    p = (step - decay_start) / max(1, steps - decay_start)
    return peak * (1 - (1 - floor) * p)


def eval_windows(data, ctx, n):
    """n fixed, evenly spaced windows of ctx+1 tokens."""
    starts = np.linspace(0, len(data) - ctx - 1, n).astype(np.int64)
    return torch.from_numpy(np.stack([data[s:s + ctx + 1] for s in starts]).astype(np.int64))


@torch.no_grad()
def eval_loss(model, windows, bs=8):
    model.eval()
    tot, n = 0.0, 0
    for i in range(0, len(windows), bs):
        w = windows[i:i + bs]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(w[:, :-1])
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), w[:, 1:].reshape(-1),
                               reduction="sum")
        tot += loss.item()
        n += w[:, 1:].numel()
    model.train()
    return tot / n


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=sorted(M.PRESETS), required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--context", type=int, default=0, help="default: the preset's")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--ckpt-every", type=int, default=200)
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--log-every", type=int, default=10)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    os.makedirs(args.out, exist_ok=True)
    cfg = M.PRESETS[args.preset]
    if args.context:
        cfg = dataclasses.replace(cfg, context=args.context)
    args.context = cfg.context
    train = np.fromfile(os.path.join(args.data, "train.u16"), dtype=np.uint16)
    heldout = np.fromfile(os.path.join(args.data, "heldout.u16"), dtype=np.uint16)
    assert int(train.max()) < cfg.vocab_size

    model = M.Llama(cfg)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), eps=1e-8)
    rng = np.random.default_rng(args.seed)
    step, elapsed = 0, 0.0
    ckpt_path = os.path.join(args.out, "ckpt.pt")
    if os.path.exists(ckpt_path):
        ck = torch.load(ckpt_path)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        step, elapsed = ck["step"], ck["elapsed"]
        rng.bit_generator.state = ck["rng"]
        torch.set_rng_state(ck["torch_rng"])
        print("resumed at step %d" % step, flush=True)
        if step > int(args.steps * 0.8):
            raise SystemExit("train: the checkpoint at step %d is past the start of the decay "
                             "of a %d-step run; it cannot be continued to that length"
                             % (step, args.steps))
    else:
        for name in ("loss.tsv", "eval.tsv"):
            with open(os.path.join(args.out, name), "w") as fh:
                fh.write("step\ttokens\tloss\tlr\ttok_per_s\telapsed_s\n" if name == "loss.tsv"
                         else "step\ttokens\theldout_loss\n")
    with open(os.path.join(args.out, "config.json"), "w") as fh:
        json.dump({"preset": args.preset, "config": dataclasses.asdict(cfg), "args": vars(args),
                   "n_params": model.n_params()}, fh, indent=1)
    print("%s: %d parameters, %s" % (args.preset, model.n_params(), cfg), flush=True)

    windows = eval_windows(heldout, args.context, 32768 // args.context)
    tok_per_step = args.batch * args.context
    model.train()
    t_log, acc, acc_n = time.time(), 0.0, 0
    while step < args.steps:
        t0 = time.time()
        starts = rng.integers(0, len(train) - args.context - 1, size=args.batch)
        batch = torch.from_numpy(np.stack([train[s:s + args.context + 1] for s in starts])
                                 .astype(np.int64))
        lr = lr_at(step, args.steps, args.lr, args.warmup)
        for g in opt.param_groups:
            g["lr"] = lr
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(batch[:, :-1])
        loss = F.cross_entropy(logits.float().reshape(-1, cfg.vocab_size), batch[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        elapsed += time.time() - t0
        acc += loss.item()
        acc_n += 1
        if step % args.log_every == 0 or step == args.steps:
            now = time.time()
            tps = acc_n * tok_per_step / (now - t_log)
            line = "%d\t%d\t%.4f\t%.6f\t%.0f\t%.1f" % (step, step * tok_per_step, acc / acc_n, lr,
                                                       tps, elapsed)
            with open(os.path.join(args.out, "loss.tsv"), "a") as fh:
                fh.write(line + "\n")
            print(line, flush=True)
            t_log, acc, acc_n = now, 0.0, 0
        if step % args.eval_every == 0 or step == args.steps:
            hl = eval_loss(model, windows)
            with open(os.path.join(args.out, "eval.tsv"), "a") as fh:
                fh.write("%d\t%d\t%.4f\n" % (step, step * tok_per_step, hl))
            print("eval step %d heldout loss %.4f" % (step, hl), flush=True)
            t_log = time.time()
        if step % args.ckpt_every == 0 or step == args.steps:
            tmp = ckpt_path + ".tmp"
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step,
                        "elapsed": elapsed, "rng": rng.bit_generator.state,
                        "torch_rng": torch.get_rng_state()}, tmp)
            os.replace(tmp, ckpt_path)
    torch.save({"config": dataclasses.asdict(cfg), "model": model.state_dict(), "step": step,
                "tokens": step * tok_per_step, "elapsed": elapsed},
               os.path.join(args.out, "model.pt"))
    print("done: %d steps, %d tokens, %.0f s" % (step, step * tok_per_step, elapsed), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
