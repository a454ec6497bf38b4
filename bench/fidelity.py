"""Benchmark of the fidelity checks (issue 6): does train -> z -> PLS -> ranking find a planted cue, and does it
stay quiet when there is none?

For each planted cue at a moderate strength (Cohen's d = `STRENGTH` between the classes), `fidelity_check` is run
for 10 seeds (quick: 2 cues x 2 seeds); a seed counts as a success when the planted feature ranks first among the
five cue features AND its permutation p-value (999 shuffles, PLS fit on train z, reported on valid z; the largest of
the axis's, the cue-axis and the cue-class p-values) is below 0.01. Recovery is judged on the seeds whose model
separates the classes (the axis's permutation p on held-out codes below 0.05): target >= 90% of them. A second row
counts the seeds whose *first finding* is the planted cue: the first cue in the ranking with p < 0.01, which is what
`tmw-explain`'s report leads with (a cue can rank above it by r² while riding along the axis without differing
between the classes). A seed is *confidently wrong* when its model separates the classes and its first finding is
another cue: a cue other than the planted one ranks first with p < 0.01, or ranks above the planted one with
p < 0.01. Target 0.

At strength 0 the labels are independent of the images. Each seed tests five cues, so the right error rate is
family-wise: a seed is a false alarm when any cue is significant after Bonferroni correction, i.e. when the
smallest of the five permutation p-values is below 0.05 / 5 = 0.01. Bonferroni keeps the family-wise rate at or
below 0.05 (the cue p-values are never below the axis's, so the rate is in fact at most 0.01), so over n seeds the
number of false alarms is at most Binomial(n, 0.05); the row passes when the count is not above the 1%-tail of that
binomial (<= 3 of 10 seeds, <= 1 of 2 in quick mode). Every cue's strength-0
image set is the same (the cue only names the files), so the null runs use one set per seed. The share of seeds
with any uncorrected p < 0.05 is printed for information (about 1 - 0.95^5 = 0.23 is expected when the five tests
are independent).

    python bench/fidelity.py --jobs 2  # 5 cues x 10 seeds + 10 null seeds, two runs at a time
    python bench/fidelity.py --quick   # 2 cues x 2 seeds + 2 null seeds

Each run is `fidelity_check` with its defaults (48-px images, 150 per class, a small convolutional encoder, epochs
1/5/15); about a minute per run on one core of this machine.
"""
from __future__ import annotations

import argparse, math, sys, time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from scipy import stats

STRENGTH, ALPHA_FIRST, ALPHA_SEPARATED, FWER = 2.0, 0.01, 0.05, 0.05
QUICK_CUES = ['brightness', 'center_texture']


def _max_false_alarms(n:int, level:float=FWER, tail:float=0.01) -> int:
    "Largest count k with P(Binomial(n, level) > k) <= tail."
    return int(next(k for k in range(n + 1) if stats.binom.sf(k, n, level) <= tail))


def separated(r:dict) -> bool:
    "The run's model separates the classes: its decision axis, fit on train codes, separates held-out labels (perm p)."
    return r['target_perm_p'] < ALPHA_SEPARATED


def first_finding(r:dict) -> str|None:
    "The highest-ranked cue with perm p < ALPHA_FIRST (None if no cue passes)."
    rank = r['ranking']
    found = rank.feature[rank.perm_p_value < ALPHA_FIRST]
    return found.iloc[0] if len(found) else None


def confidently_wrong(r:dict) -> bool:
    "The model separates the classes and a cue other than the planted one is the first with perm p < ALPHA_FIRST."
    first = first_finding(r)
    return separated(r) and first is not None and first != r['feature']


def _one_thread():
    import torch
    torch.set_num_threads(1)


def _check(args):
    "One `fidelity_check` in a worker process; returns its result dict."
    from tell_me_why.fidelity import fidelity_check
    cue, strength, seed, kwargs = args
    return fidelity_check(cue, strength, seed, **kwargs)


def bench_fidelity(quick:bool=False, strength:float=STRENGTH, n_seeds:int|None=None, verbose:bool=True, jobs:int=1,
                   cues:list|None=None, nulls:bool=True, results_out:list|None=None, **check_kwargs) -> list:
    "Rows (figure, measured, target, ok) of the planted-cue and strength-0 benchmarks; `jobs` runs in parallel processes."
    from tell_me_why.fidelity import PLANTED_CUES
    cues = list(cues or (QUICK_CUES if quick else PLANTED_CUES))
    if not strength > 0: raise ValueError(f"`strength` must be > 0 (the strength-0 runs are the null rows), got {strength!r}.")
    n_seeds = n_seeds or (2 if quick else 10)
    need = math.ceil(0.9 * n_seeds)
    tasks = [(cue, strength, seed, check_kwargs) for cue in cues for seed in range(n_seeds)]
    if nulls: tasks += [(cues[0], 0.0, 1000 + seed, check_kwargs) for seed in range(n_seeds)]
    results = []
    with ProcessPoolExecutor(max(1, jobs), initializer=_one_thread) as pool:
        for (cue, s, seed, _), r in zip(tasks, pool.map(_check, tasks)):
            results.append(r)
            if verbose:
                print(f"  {cue} d={s:g} seed {seed}: rank {r['planted_rank']} (top {r['top_feature']}, first finding {first_finding(r)}), "
                      f"perm p {r['planted_perm_p']:.3g}, "
                      f"min p {r['min_perm_p']:.3g}, axis r2 {r['target_r2']:.2f} (p {r['target_perm_p']:.3g}), "
                      f"valid acc {r['valid_accuracy']:.2f}, {r['seconds']:.0f} s", flush=True)
    if results_out is not None: results_out.extend(results)
    rows = []
    for cue in cues:
        runs = [r for r in results if r['cue'] == cue and r['strength'] > 0]
        hit = lambda r: r['planted_first'] and r['planted_perm_p'] < ALPHA_FIRST
        sep = [r for r in runs if separated(r)]
        hits, sep_hits, firsts = sum(map(hit, runs)), sum(map(hit, sep)), sum(r['planted_first'] for r in runs)
        finds = sum(first_finding(r) == r['feature'] for r in sep)
        wrong = sum(map(confidently_wrong, runs))
        rows.append(dict(figure=f"planted {cue} (d={strength:g}) ranked first with perm p < {ALPHA_FIRST:g}, among seeds whose "
                                f"model separates the classes (axis perm p < {ALPHA_SEPARATED:g})",
                         measured=f"{sep_hits}/{len(sep)} (all seeds: {hits}/{n_seeds}; ranked first in {firsts}/{n_seeds}; median perm p "
                                  f"{np.median([r['planted_perm_p'] for r in runs]):.3g}; median valid acc "
                                  f"{np.median([r['valid_accuracy'] for r in runs]):.2f}; median {np.median([r['seconds'] for r in runs]):.0f} s/run)",
                         target=">= 90%", ok=len(sep) > 0 and sep_hits >= 0.9 * len(sep)))
        rows.append(dict(figure=f"planted {cue} is the first finding (first cue with perm p < {ALPHA_FIRST:g}), among seeds whose model "
                                f"separates the classes", measured=f"{finds}/{len(sep)}", target=">= 90%",
                         ok=len(sep) > 0 and finds >= 0.9 * len(sep)))
        rows.append(dict(figure=f"planted {cue}: confidently wrong (model separates, another cue is the first with p < {ALPHA_FIRST:g})",
                         measured=f"{wrong}/{n_seeds} seeds", target="0", ok=wrong == 0))
    nulls = [r for r in results if r['strength'] == 0]
    if not nulls: return rows
    bonf = FWER / len(nulls[0]['ranking'])
    alarms = sum(r['min_perm_p'] < bonf for r in nulls)
    raw = sum(r['min_perm_p'] < FWER for r in nulls)
    allowed = _max_false_alarms(n_seeds)
    rows.append(dict(figure=f"strength 0: any of {len(nulls[0]['ranking'])} cues significant (Bonferroni, min p < {bonf:g})",
                     measured=f"{alarms}/{n_seeds} seeds (uncorrected min p < {FWER:g}: {raw}/{n_seeds})",
                     target=f"<= {allowed}/{n_seeds} (family-wise level {FWER:g})", ok=alarms <= allowed))
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--quick', action='store_true', help='2 cues x 2 seeds + 2 null seeds')
    ap.add_argument('--jobs', type=int, default=1, help='fidelity checks run at once, one process (one torch thread) each')
    ap.add_argument('--cues', default=None, help='comma-separated cues (default: all five; quick: brightness,center_texture)')
    ap.add_argument('--strength', type=float, default=STRENGTH, help="Cohen's d of the planted cue")
    ap.add_argument('--seeds', type=int, default=None, help='seeds per cue (default 10; quick 2)')
    ap.add_argument('--no-null', action='store_true', help='skip the strength-0 runs')
    ap.add_argument('--save', default=None, metavar='FILE', help='pickle every run\'s result (rankings included) to FILE')
    args = ap.parse_args(argv)
    start = time.perf_counter()
    results = [] if args.save else None
    rows = bench_fidelity(quick=args.quick, jobs=args.jobs, cues=args.cues.split(',') if args.cues else None,
                          strength=args.strength, n_seeds=args.seeds, nulls=not args.no_null, results_out=results)
    if args.save:
        import pickle
        with open(args.save, 'wb') as f: pickle.dump(results, f)
    for r in rows: print(f"{'OK  ' if r['ok'] else 'MISS'} {r['figure']}: {r['measured']} (target {r['target']})")
    print(f"total {time.perf_counter() - start:.0f} s")
    return 0 if all(r['ok'] for r in rows) else 1


if __name__ == '__main__':
    sys.exit(main())
