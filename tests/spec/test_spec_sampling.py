#!/usr/bin/python3
"""Speculative decoding keeps the target's distribution: token frequencies of sampled output
with speculation off, from a draft model and from prompt lookup, on stories260K (vocab 512).

  test_spec_sampling.py --driver spec_sample_dump --shared DIR --draft OUT.bin [--n N] [--jobs 2]

What runs. spec_sample_dump serves N seeded requests per arm through the scheduler (32 slots,
each step as full as the slots allow): prompt 1,461,461,401 (BOS and the start of the model's
greedy story), GEN = 6 generated ids, end of generation ignored, at most 4 proposals per step
(prompt lookup: the scheduler's adaptive K; the draft: always 4, --fixed-k, since a draft as
large as its target never pays and the scheduler would rightly stop proposing). Three
sampling configurations: temperature 1; temperature 1 with top-k 40 and top-p 0.9 (the engine
returns top-k candidates, not full logits); temperature 1 with repeat penalty 1.3 (full
logits, and a distribution that depends on the proposals before it). Arms per configuration:
speculation off, a draft model (stories260K with Gaussian noise of 0.03 times each weight
array's standard deviation, make_draft.py: it agrees with the target about half the time, so
accepted proposals and rejected-and-resampled ones are both frequent), prompt lookup. The
temperature-1 configuration has a second independent "off" arm (off') for the power and
calibration checks below.

Independent draws. Each arm has its own block of fixed seeds, not the seeds of the other
arms: with common seeds the arms would be coupled (prompt lookup checks a proposal by drawing
from the target's distribution exactly as plain decoding does, so with common seeds it gives
plain decoding's very tokens; a draft's rejection sampling shares the generator too), and the
chi-square homogeneity test assumes independent samples. Across the requests of one arm the
draws are independent (one seed each); within a request, positions are not, so every position
is tested on its own. That coupling is checked as such: prompt lookup on the "off" arm's first
SAME_SEED_COUNT seeds must give exactly its tokens, in every configuration (with the repeat
penalty this also checks that each verified row is penalised for the proposals before it).

The test. Position 1 comes from the prompt's prefill in every mode; positions 2..GEN are the
ones speculation produces. For each position, configuration and speculative mode, the N
tokens of the mode against the N tokens of "off" form a 2 x k contingency table, and the
chi-square homogeneity statistic sum (O - E)^2 / E, E = row total x column total / 2N, has
k - 1 degrees of freedom. Two binnings, both with every expected count >= 5:
  fine:   a bin per token whose expected count is >= 5 in each arm (pooled count >= 10), the
          rest in one "other" bin: df 2..500 here; it sees shifts spread over many tokens,
          rare ones included;
  coarse: a bin per token with pooled frequency >= 5% (and the most frequent token in any
          case), the rest in "other": df 1..7; it sees a shift among the frequent tokens,
          which the fine binning dilutes over its many degrees of freedom.
The survival function Q(df/2, x/2) (regularized upper incomplete gamma: its series below
a + 1, a Lentz continued fraction above) is checked first against closed forms (even df: a
Poisson sum; df 1: erfc) and table values. Bonferroni over the family: 2 binnings x 5 positions
x (3 configurations x 2 modes + 1 calibration off' vs off) = 70 tests; the test fails if any
p x 70 < 0.001 (a raw p below 1.4e-5).

Power. A "2% shift" is taken as the hardest kind for a per-token test: 2% of the draws moved
from the most frequent token to all the others in proportion to their frequencies (a total
variation of 0.02 that keeps every ratio among the other tokens). Its chi-square
noncentrality is N x 0.02^2 / (2 p0 (1 - p0)) for a top-token frequency p0, smallest near
p0 = 1/2; at positions 2..6 here p0 is 0.75, 0.32, 0.14, 0.10, 0.10. Shown on the data: at every
position, off' with the shift applied against off must be rejected by the same procedure
(corrected p < 0.001). And estimated: the same shift on pairs of samples drawn from the
pooled off / off' frequencies (a fixed NumPy seed), whose rejection rate must be >= 0.8 at
every position. With N = 40000 per arm that rate is 0.97..0.99 at position 2, about 0.9 at
position 3 (p0 = 0.32, the hardest) and 1 at the others; N = 30000 would give 0.85 and 0.7. off'
unshifted against off is the calibration: it must not be rejected.

Also: the draft's acceptance rate is strictly between 0.2 and 0.95 in every configuration (both
branches of rejection sampling ran), prompt lookup proposed tokens in every configuration, and
greedy requests (temperature 0, 4 more prompt ids drawn per seed, 16 tokens) give exactly the
same ids in all three modes.

Cost: 1.2 .. 5.5 x 10^-4 CPU seconds per request (the sampler's sort of the vocabulary is most
of it), about 120 CPU seconds in all; the arms run --jobs at a time with one OpenMP thread each.
Exit 0 pass, 1 fail, 77 skip (stories260K.bin absent and CI not "true")."""
import argparse
import math
import os
import resource
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402

import make_draft  # noqa: E402

PROMPT = "1,461,461,401"
GEN = 6
MAX_DRAFT = 4
SLOTS = 32
VOCAB = 512             # stories260K's
ARM_TIMEOUT = 600       # seconds for one run of the driver
N_DEFAULT = 40000
DRAFT_NOISE = 0.03
DRAFT_SEED = 1234
ALPHA = 0.001
SHIFT = 0.02
MIN_EXPECTED = 5        # fine binning: expected count per arm
COARSE_FREQ = 0.05      # coarse binning: pooled frequency
POWER_TRIALS = 200      # simulated sample pairs per position
POWER_MIN = 0.8         # least simulated detection rate of the shift
POWER_SEED = 2024
ACCEPT_RANGE = (0.2, 0.95)
CONFIGS = [
    ("temp 1", ["--temp", "1"]),
    ("top-k 40 top-p 0.9", ["--temp", "1", "--top-k", "40", "--top-p", "0.9"]),
    ("repeat penalty 1.3", ["--temp", "1", "--repeat-penalty", "1.3"]),
]
MODES = ["draft", "ngram"]
POSITIONS = range(2, GEN + 1)  # 1-based generated positions that speculation produces
N_TESTS = 2 * len(POSITIONS) * (len(CONFIGS) * len(MODES) + 1)
GREEDY_COUNT, GREEDY_GEN, GREEDY_VARY = 256, 16, 4
SAME_SEED_COUNT = 4000


# ---------------------------------------------------------------- chi-square

def gamma_q(a, x):
    """Regularized upper incomplete gamma Q(a, x) = Gamma(a, x) / Gamma(a), a > 0, x >= 0."""
    if x <= 0.0:
        return 1.0
    log_front = a * math.log(x) - x - math.lgamma(a)  # log(x^a e^-x / Gamma(a))
    if x < a + 1.0:
        # P(a, x) = x^a e^-x / Gamma(a + 1) * sum_n x^n / ((a + 1) .. (a + n)); converges fast here
        term = total = 1.0 / a
        ap = a
        for _ in range(100000):
            ap += 1.0
            term *= x / ap
            total += term
            if term < total * 1e-16:
                break
        return max(0.0, 1.0 - total * math.exp(log_front))
    # Q(a, x) = x^a e^-x / Gamma(a) * 1 / (x + 1 - a - 1 (1 - a) / (x + 3 - a - 2 (2 - a) / (x + 5 - a - ...)))
    # evaluated by the modified Lentz method; it converges fast for x >= a + 1
    tiny = 1e-300
    b = x + 1.0 - a
    c = 1.0 / tiny
    d = 1.0 / b
    h = d
    for i in range(1, 100000):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1.0 / d
        step = d * c
        h *= step
        if abs(step - 1.0) < 1e-16:
            break
    return math.exp(log_front) * h


def chi2_sf(x, df):
    """P(X > x) for X chi-square with df degrees of freedom."""
    return gamma_q(df / 2.0, x / 2.0)


def check_chi2_sf():
    """Returns a list of problems: chi2_sf against closed forms and table values."""
    cases = [(3.841458820694124, 1, 0.05), (18.307038053275146, 10, 0.05), (6.6348966010212145, 1, 0.01),
             (124.34211340400407, 100, 0.05)]
    for x in (0.01, 0.5, 1.0, 3.0, 10.0, 40.0):
        cases.append((x, 1, math.erfc(math.sqrt(x / 2.0))))
    for df in (2, 4, 10, 30, 200):
        for x in (0.1, 1.0, df / 2.0, float(df), 2.0 * df, 5.0 * df + 40.0):
            # even df = 2k: Q(k, x/2) = e^(-x/2) sum_{i<k} (x/2)^i / i!, summed in logs
            h = x / 2.0
            terms = [i * math.log(h) - h - math.lgamma(i + 1) for i in range(df // 2)]
            top = max(terms)
            cases.append((x, df, math.exp(top) * sum(math.exp(t - top) for t in terms)))
    problems = []
    for x, df, want in cases:
        got = chi2_sf(x, df)
        if not abs(got - want) <= 1e-9 * want:
            problems.append(f"chi2_sf({x}, {df}) = {got!r}, want {want!r}")
    return problems


def table(ca, cb, min_count):
    """The 2 x k table of two count vectors: a bin per token whose expected count in each arm
    is >= min_count (and the most frequent token's in any case), the rest in one "other" bin
    (merged into the smallest bin if it would be below min_count itself)."""
    na, nb = ca.sum(), cb.sum()
    expected = np.minimum(na, nb) * (ca + cb) / (na + nb)
    own = expected >= min_count
    own[np.argmax(ca + cb)] = True
    rows = np.stack([ca[own], cb[own]]).astype(np.float64)
    rows = rows[:, np.argsort(-(rows.sum(0)), kind="stable")]
    other = np.array([ca[~own].sum(), cb[~own].sum()], dtype=np.float64)
    if other.sum() > 0:
        if min(na, nb) * other.sum() / (na + nb) >= min_count or rows.shape[1] == 0:
            rows = np.concatenate([rows, other[:, None]], axis=1)
        else:
            rows[:, -1] += other
    return rows


def homogeneity(rows):
    """(statistic, df, p) of the chi-square homogeneity test of a 2 x k table."""
    expected = rows.sum(1, keepdims=True) * rows.sum(0, keepdims=True) / rows.sum()
    stat = float(((rows - expected) ** 2 / expected).sum())
    df = rows.shape[1] - 1
    return stat, df, chi2_sf(stat, df) if df > 0 else 1.0


def compare(ca, cb):
    """[(binning, statistic, df, p, corrected p)] of two samples' counts at one position."""
    n = min(ca.sum(), cb.sum())
    out = []
    for name, min_count in (("fine", MIN_EXPECTED), ("coarse", max(MIN_EXPECTED, COARSE_FREQ * n))):
        stat, df, p = homogeneity(table(ca, cb, min_count))
        out.append((name, stat, df, p, min(1.0, p * N_TESTS)))
    return out


def shifted(counts, frac):
    """counts with frac of all draws moved from the most frequent token to the others, in
    proportion to their counts (largest remainders get the rounding)."""
    c = counts.copy()
    move = int(round(frac * c.sum()))
    top = int(np.argmax(c))
    rest = c.astype(np.float64)
    rest[top] = 0.0
    share = rest / rest.sum() * move
    add = np.floor(share).astype(np.int64)
    add[np.argsort(-(share - add), kind="stable")[:move - int(add.sum())]] += 1
    c[top] -= move
    return c + add


# ---------------------------------------------------------------- runs

class Arm:
    def __init__(self, name, args, seed, count, gen):
        self.name, self.args, self.seed, self.count, self.gen = name, args, seed, count, gen
        self.ids = None       # [count][gen]
        self.totals = None    # {"proposed": .., "accepted": .., "spec_steps": ..}
        self.seconds = 0.0
        self.error = None


def run_arm(driver, model, arm):
    cmd = [driver, "--model", model, "--seed", str(arm.seed), "--count", str(arm.count), "--gen", str(arm.gen),
           "--slots", str(SLOTS), "--max-draft", str(MAX_DRAFT)] + arm.args
    env = dict(os.environ, OMP_NUM_THREADS="1")  # the arms run side by side, one core each
    t0 = time.time()
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=ARM_TIMEOUT)
    except subprocess.TimeoutExpired:
        arm.error = f"no end after {ARM_TIMEOUT} s\n  command: {' '.join(cmd)}"
        return arm
    arm.seconds = time.time() - t0
    if r.returncode != 0:
        arm.error = f"exit {r.returncode}: {r.stderr.strip()[-2000:]}\n  command: {' '.join(cmd)}"
        return arm
    lines = r.stdout.splitlines()
    if len(lines) != arm.count + 1 or not lines[-1].startswith("totals "):
        arm.error = f"{len(lines)} output lines, want {arm.count} ids lines and the totals"
        return arm
    data = np.array(" ".join(line[4:] for line in lines[:-1]).split(), dtype=np.int64)
    if data.size != arm.count * (arm.gen + 1):
        arm.error = f"{data.size} numbers in the ids lines, want {arm.count} x (1 + {arm.gen})"
        return arm
    data = data.reshape(arm.count, arm.gen + 1)
    if not np.array_equal(data[:, 0], arm.seed + np.arange(arm.count)):
        arm.error = "the ids lines are not one per seed in order"
        return arm
    arm.ids = data[:, 1:]
    words = lines[-1].split()
    arm.totals = {words[i]: int(words[i + 1]) for i in range(1, len(words) - 1, 2)}
    return arm


def counts(arm, position):
    return np.bincount(arm.ids[:, position - 1], minlength=VOCAB)


# ---------------------------------------------------------------- checks

def fmt_p(p):
    return f"{p:.2g}" if p >= 1e-3 else f"{p:.1e}"


def check_distributions(sampled, failures):
    """Off against each speculative mode, per configuration and position."""
    print(f"\nchi-square homogeneity, off vs speculative, corrected p = min(1, p x {N_TESTS}) "
          f"(fail below {ALPHA}); each cell: corrected p (df), fine / coarse")
    worst = 1.0
    for cname, _ in CONFIGS:
        off = sampled[(cname, "off")]
        print(f"  {cname}:")
        for mode in MODES:
            cells = []
            for j in POSITIONS:
                res = compare(counts(off, j), counts(sampled[(cname, mode)], j))
                cells.append(" / ".join(f"{fmt_p(c)} ({df})" for _, _, df, _, c in res))
                for binning, stat, df, p, c in res:
                    worst = min(worst, c)
                    if c < ALPHA:
                        failures.append(f"{cname}, {mode}, position {j}, {binning} binning: chi2 {stat:.1f} "
                                        f"df {df} p {p:.3g}, corrected {c:.3g} < {ALPHA}")
            print(f"    {mode:5s} " + "  ".join(f"j={j}: {cell}" for j, cell in zip(POSITIONS, cells)))
    print(f"  smallest corrected p: {fmt_p(worst)}")


def detected(ca, cb):
    """Whether the procedure rejects: the smallest corrected p of compare() below ALPHA."""
    return min(c for *_, c in compare(ca, cb)) < ALPHA


def check_power(off, off2, failures):
    """The same procedure on a sample with a 2% shift applied, and on the unshifted one; and the
    rate at which it detects the shift on simulated samples of the same size."""
    n = off.count
    rng = np.random.default_rng(POWER_SEED)
    print(f"\npower: off' (seeds {off2.seed}..) with {SHIFT:.0%} of its draws moved from the most frequent token "
          f"to the others, against off (seeds {off.seed}..), N = {n} each; simulated: {POWER_TRIALS} pairs of "
          f"samples of N from the pooled frequencies, one shifted; calibration: off' unshifted")
    for j in POSITIONS:
        ca, cb = counts(off, j), counts(off2, j)
        pooled = (ca + cb) / (2 * n)
        shift_res = compare(ca, shifted(cb, SHIFT))
        null_res = compare(ca, cb)
        best = min(c for *_, c in shift_res)
        rate = sum(detected(rng.multinomial(n, pooled), shifted(rng.multinomial(n, pooled), SHIFT))
                   for _ in range(POWER_TRIALS)) / POWER_TRIALS
        print(f"  j={j}: p0 {pooled.max():.3f}; shifted: "
              + ", ".join(f"{b} chi2 {s:.1f} df {df} corrected p {fmt_p(c)}" for b, s, df, _, c in shift_res)
              + f" -> {'detected' if best < ALPHA else 'MISSED'}; simulated power {rate:.3f}; unshifted: "
              + ", ".join(f"{b} {fmt_p(c)}" for b, _, _, _, c in null_res))
        if best >= ALPHA:
            failures.append(f"power: the {SHIFT:.0%} shift at position {j} was not detected (smallest corrected p "
                            f"{best:.3g}): more draws per arm are needed")
        if rate < POWER_MIN:
            failures.append(f"power: the {SHIFT:.0%} shift at position {j} is detected in {rate:.0%} of simulated "
                            f"samples, below {POWER_MIN:.0%}: more draws per arm are needed")
        for binning, stat, df, p, c in null_res:
            if c < ALPHA:
                failures.append(f"calibration: off vs off' at position {j}, {binning} binning: chi2 {stat:.1f} df {df} "
                                f"corrected p {c:.3g} < {ALPHA} (two samples of the same sampler differ)")


def check_acceptance(sampled, failures):
    print("\nspeculation totals (over each arm's requests)")
    for cname, _ in CONFIGS:
        d, g = sampled[(cname, "draft")].totals, sampled[(cname, "ngram")].totals
        rate = d["accepted"] / d["proposed"] if d["proposed"] else 0.0
        print(f"  {cname}: draft proposed {d['proposed']} accepted {d['accepted']} (rate {rate:.3f}) in "
              f"{d['spec_steps']} steps; ngram proposed {g['proposed']} accepted {g['accepted']} in "
              f"{g['spec_steps']} steps")
        if not ACCEPT_RANGE[0] < rate < ACCEPT_RANGE[1]:
            failures.append(f"{cname}: the draft's acceptance rate {rate:.3f} is outside {ACCEPT_RANGE}: one branch of "
                            f"rejection sampling barely ran")
        if g["proposed"] <= 0:
            failures.append(f"{cname}: prompt lookup proposed nothing")


def check_identical(name, arm, off, failures):
    """arm's ids must equal off's on the same seeds, with proposals accepted along the way."""
    differ = np.flatnonzero((arm.ids != off.ids[:arm.count]).any(axis=1))
    t = arm.totals
    print(f"  {name}: proposed {t['proposed']} accepted {t['accepted']}; {len(differ)} of {arm.count} outputs "
          f"differ from off")
    if len(differ):
        i = int(differ[0])
        failures.append(f"{name}: {len(differ)} outputs differ from plain decoding on the same seeds, first seed "
                        f"{off.seed + i}: {arm.ids[i].tolist()} vs {off.ids[i].tolist()}")
    if t["accepted"] <= 0:
        failures.append(f"{name}: no proposal was accepted, so nothing was checked")


def check_greedy(greedy, failures):
    off = greedy["off"]
    print(f"\ngreedy: {off.count} prompts, {off.gen} tokens each")
    for mode in MODES:
        check_identical(f"greedy {mode}", greedy[mode], off, failures)


def check_same_seeds(sampled, same, failures):
    print(f"\nprompt lookup on the off arm's seeds ({SAME_SEED_COUNT} requests):")
    for cname, arm in same.items():
        check_identical(f"{cname} ngram", arm, sampled[(cname, "off")], failures)


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--driver", required=True, help="spec_sample_dump")
    ap.add_argument("--shared", required=True, help="the shared/ folder (models/stories260K.bin)")
    ap.add_argument("--draft", required=True, help="where to write the draft model")
    ap.add_argument("--n", type=int, default=N_DEFAULT, help="requests per arm")
    ap.add_argument("--jobs", type=int, default=2, help="arms run at once")
    a = ap.parse_args()
    if a.n < 100 or a.jobs < 1:
        ap.error("--n must be >= 100 and --jobs >= 1")
    t_start = time.time()

    problems = check_chi2_sf()
    if problems:
        print("FAIL: the chi-square survival function is wrong:\n  " + "\n  ".join(problems))
        return 1
    print("chi2_sf: closed forms and table values agree (chi2_sf(3.841459, 1) = "
          f"{chi2_sf(3.841458820694124, 1):.6f}, chi2_sf(18.307038, 10) = {chi2_sf(18.307038053275146, 10):.6f})")

    model = os.path.join(a.shared, "models", "stories260K.bin")
    if not os.path.exists(model):
        if os.environ.get("CI") == "true":
            print(f"FAIL: {model} is missing (CI=true)")
            return 1
        print(f"SKIP: {model} is missing (the shared/ folder is not beside the project)")
        return 77
    if not os.access(a.driver, os.X_OK):
        print(f"FAIL: {a.driver} is not an executable")
        return 1
    os.makedirs(os.path.dirname(os.path.abspath(a.draft)), exist_ok=True)
    try:
        make_draft.make_draft(model, a.draft, DRAFT_NOISE, DRAFT_SEED)
    except (OSError, ValueError) as e:
        print(f"FAIL: cannot write the draft model {a.draft}: {e}")
        return 1

    # Every sampled arm its own block of seeds (independent samples); the greedy arms share theirs
    # (the same prompts, which the seed draws).
    sampled, arms, block = {}, [], 0
    for cname, cargs in CONFIGS:
        for mode in ["off"] + MODES + (["off2"] if cname == CONFIGS[0][0] else []):
            args = ["--prompt", PROMPT] + cargs + ["--spec", "off" if mode == "off2" else mode]
            if mode == "draft":
                args += ["--draft", a.draft, "--fixed-k"]
            arm = Arm(f"{cname} / {mode}", args, 1 + block * a.n, a.n, GEN)
            block += 1
            sampled[(cname, mode)] = arm
            arms.append(arm)
    same = {}
    for cname, cargs in CONFIGS:
        off = sampled[(cname, "off")]
        same[cname] = Arm(f"{cname} / ngram on off's seeds", ["--prompt", PROMPT] + cargs + ["--spec", "ngram"], off.seed,
                          SAME_SEED_COUNT, GEN)
        arms.append(same[cname])
    greedy = {}
    for mode in ["off"] + MODES:
        args = ["--prompt", PROMPT, "--vary-prompt", str(GREEDY_VARY), "--temp", "0", "--spec", mode]
        if mode == "draft":
            args += ["--draft", a.draft, "--fixed-k"]
        greedy[mode] = Arm(f"greedy / {mode}", args, 7, GREEDY_COUNT, GREEDY_GEN)
        arms.append(greedy[mode])
    # the longest first, so that the two workers end together
    order = sorted(arms, key=lambda arm: -arm.count * (2 if "draft" in arm.args else 1))
    with ThreadPoolExecutor(max_workers=a.jobs) as pool:
        list(pool.map(lambda arm: run_arm(a.driver, model, arm), order))
    errors = [f"{arm.name}: {arm.error}" for arm in arms if arm.error]
    if errors:
        print("FAIL: spec_sample_dump failed:\n  " + "\n  ".join(errors))
        return 1
    t_runs = time.time() - t_start
    cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(f"{len(arms)} arms ({a.n} requests each for the sampled ones) in {t_runs:.1f} s, "
          f"{cpu.ru_utime + cpu.ru_stime:.1f} CPU s, {a.jobs} at a time: "
          + ", ".join(f"{arm.name} {arm.seconds:.1f} s" for arm in arms))

    failures = []
    check_distributions(sampled, failures)
    check_power(sampled[(CONFIGS[0][0], "off")], sampled[(CONFIGS[0][0], "off2")], failures)
    check_acceptance(sampled, failures)
    check_greedy(greedy, failures)
    check_same_seeds(sampled, same, failures)
    print(f"\n{time.time() - t_start:.1f} s in all")
    if failures:
        print("FAIL:\n  " + "\n  ".join(failures))
        return 1
    print(f"PASS: sampled output keeps the target's distribution at positions 2..{GEN} in {len(CONFIGS)} "
          f"configurations x {len(MODES)} modes; a {SHIFT:.0%} shift is detected at every position; greedy output "
          f"is unchanged")
    return 0


if __name__ == "__main__":
    sys.exit(main())
