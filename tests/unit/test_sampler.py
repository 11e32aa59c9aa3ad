#!/usr/bin/python3
"""The sampler's distributions against an independent NumPy reading of its contract
(sampler.h): repetition penalty (each distinct token of the last repeat_last_n once: a
positive logit divided by it, a negative one multiplied), temperature, top-k by (logit
descending, id ascending), softmax, top-p (the shortest prefix whose mass reaches top_p),
min-p (p >= min_p x the top p), renormalized. Checked on random logits, with ties, for every
combination of the truncations:
  * the same candidates with the same probabilities (1e-6), most likely first when top-k, top-p
    or min-p is set and the whole vocabulary in id order when none is; a case whose cut falls
    within rounding of a threshold is skipped (the two readings may round either way);
  * sampler_distribution_top on the 64 best logits gives exactly the full one (top-k cases);
  * the seeded draws are splitmix64's uniforms walked over that distribution.
usage: test_sampler.py SAMPLER_DUMP"""
import itertools
import subprocess
import sys

import numpy as np

MASK = (1 << 64) - 1
EPS = 1e-6


def splitmix(state):
    state = (state + 0x9E3779B97F4A7C15) & MASK
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    z ^= z >> 31
    return state, (z >> 11) * (1.0 / 9007199254740992.0)


def reference(logits, temp, top_k, top_p, min_p, penalty, last_n, hist):
    """[(id, p)] the sampler's distribution, or None when a cut is within rounding."""
    lg = logits.astype(np.float32).copy()
    if penalty != 1.0:
        for t in set(hist[max(0, len(hist) - last_n):]):
            lg[t] = lg[t] / np.float32(penalty) if lg[t] > 0 else lg[t] * np.float32(penalty)
    order = sorted(range(len(lg)), key=lambda i: (-float(lg[i]), i))
    ordered = top_k > 0 or top_p < 1.0 or min_p > 0.0
    if 0 < top_k < len(lg):
        order = order[:top_k]
    x = lg[order].astype(np.float64) / temp
    p = np.exp(x - x.max())
    p /= p.sum()
    n = len(order)
    if top_p < 1.0:
        cum = np.cumsum(p)
        hit = np.nonzero(cum >= top_p - EPS)[0]
        if len(hit) and abs(cum[hit[0]] - top_p) < EPS:
            return None
        n = int(np.nonzero(cum >= top_p)[0][0]) + 1 if (cum >= top_p).any() else n
    if min_p > 0.0:
        floor = min_p * p[0]
        if any(abs(p[i] - floor) < EPS * max(floor, 1e-30) * 10 for i in range(n)):
            return None
        n = max(1, int(np.sum(p[:n] >= floor)))
    kept = p[:n] / p[:n].sum()
    dist = list(zip(order[:n], kept))
    if not ordered:
        dist.sort()
    return dist


def parse_dist(line, label):
    parts = line.split()
    assert parts[0] == label, line
    n = int(parts[1])
    items = [(int(a), float(b)) for a, b in (x.split(":") for x in parts[2:])]
    assert len(items) == n
    return items


def expected_draws(dist, seed, k):
    """The k draws, or None if a uniform falls within rounding of a boundary."""
    cum = np.cumsum([p for _, p in dist])
    out, state = [], seed
    for _ in range(k):
        state, u = splitmix(state)
        if np.any(np.abs(cum - u) < 1e-6):
            return None
        i = int(np.searchsorted(cum, u, side="right"))
        out.append(dist[min(i, len(dist) - 1)][0])
    return out


def cases(rng):
    grid = itertools.product([1, 2, 7, 100, 1000], [0.5, 1.0, 2.0], [0, 1, 5, 40, 2000], [1.0, 0.9, 0.5, 0.05],
                             [0.0, 0.05, 0.3], [1.0, 1.3])
    for vocab, temp, top_k, top_p, min_p, penalty in grid:
        if rng.random() < 0.6:
            continue
        logits = rng.normal(0.0, 3.0, size=vocab).astype(np.float32)
        if rng.random() < 0.5:  # ties
            logits = (np.round(logits * 2.0) / 2.0).astype(np.float32)
        hist = [int(t) for t in rng.integers(0, vocab, size=int(rng.integers(0, 12)))]
        yield vocab, temp, top_k, top_p, min_p, penalty, 8, int(rng.integers(0, 1 << 62)), logits, hist


def main():
    rng = np.random.default_rng(22)
    all_cases = list(cases(rng))
    text = []
    for vocab, temp, top_k, top_p, min_p, pen, last_n, seed, logits, hist in all_cases:
        text.append("%d %r %d %r %r %r %d %d" % (vocab, temp, top_k, top_p, min_p, pen, last_n, seed))
        text.append(" ".join("%.9g" % v for v in logits))
        text.append(" ".join(str(v) for v in [len(hist)] + hist))
    run = subprocess.run([sys.argv[1]], input="\n".join(text) + "\n", capture_output=True, text=True, check=True)
    lines = run.stdout.splitlines()
    at, checked, skipped, draws_checked = 0, 0, 0, 0
    for vocab, temp, top_k, top_p, min_p, pen, last_n, seed, logits, hist in all_cases:
        full = parse_dist(lines[at], "full")
        draws = [int(v) for v in lines[at + 1].split()[1:]]
        at += 2
        if 0 < top_k <= 64 and pen == 1.0:
            assert lines[at].split(" ", 1)[1] == lines[at - 2].split(" ", 1)[1], \
                "top-64 path differs from the full one: %s / %s" % (lines[at], lines[at - 2])
            at += 1
        want = reference(logits, temp, top_k, top_p, min_p, pen, last_n, hist)
        case = (vocab, temp, top_k, top_p, min_p, pen)
        if want is None:
            skipped += 1
            continue
        assert [i for i, _ in full] == [i for i, _ in want], "case %r: ids %r, expected %r" % (
            case, [i for i, _ in full][:20], [i for i, _ in want][:20])
        err = max(abs(a - b) for (_, a), (_, b) in zip(full, want))
        assert err < EPS, "case %r: probabilities differ by %g" % (case, err)
        checked += 1
        exp = expected_draws(full, seed, len(draws))
        if exp is not None:
            assert draws == exp, "case %r: draws %r, expected %r" % (case, draws, exp)
            draws_checked += 1
    assert at == len(lines), "%d lines left over" % (len(lines) - at)
    assert checked > 300 and draws_checked > 300, (checked, draws_checked)
    print("sampler: %d distributions equal to the reference (%d skipped: a cut within rounding), draws of %d "
          "reproduced" % (checked, skipped, draws_checked))


if __name__ == "__main__":
    main()
