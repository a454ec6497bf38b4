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
    python bench/fidelity.py --known-answers --jobs 2 --save ka.pkl   # both kinds of evidence on the same models
    python bench/fidelity.py --known-answers --load ka.pkl            # print a saved known-answer run again

Known answers (issue 22): `--known-answers` trains, for each planted cue and seed, the model of
`bench/interventions.py --known-answers` (d = 2, 48 px, 100 images per class, epochs 1/4/12) and reads it both ways:
the correlational ranking (as above: PLS fit on the training codes, 499 shuffles) and the cue interventions
(`cue_interventions`). Among the seeds whose classifier beats chance on the validation images (binomial p < 0.05
against the larger class's share) it counts: the planted cue has the largest |effect| with a 95 % interval that
excludes 0 (target >= 90 %); the planted cue is called "drives the decision"; the median share of the class gap it
accounts for. Over all seeds: a decoy (a second cue added to the validation images of the planted class only, 2 SD
in the direction the model is sensitive to) is never called a driver, and how often the correlational ranking
(on the decoy images) finds it significant (p < 0.01) or ranks it first; a copy with random weights (every seed) and a model trained on shuffled labels (one cue per seed)
present no cue as driving the decision (target >= 90 %), and their report says first that they do not beat
chance.

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


CF_KEYS = ('recon_vs_mean', 'recon_vs_pca', 'validity', 'cf_size', 'planted_moves')  # per seed: the decoder and its counterfactuals


def known_answer_rows(runs:list) -> list:
    "One row per planted cue of the known-answer runs (`bench/interventions.py`'s `known_answer_run` results)."
    rows = []
    for cue in dict.fromkeys(r['cue'] for r in runs):
        rs = [r for r in runs if r['cue'] == cue]
        sep = [r for r in rs if r['beats_chance']]
        ctl = [c for r in rs for c in (r['random'], r['shuffled']) if c is not None]
        rows.append(dict(
            cue=cue, seeds=len(rs), beats_chance=len(sep),
            found=sum(r['found'] for r in sep), called_driver=sum(r['feature'] in r['drivers'] for r in sep),
            only_driver=sum(r['drivers'] == [r['feature']] for r in sep),
            share=float(np.median([r['planted_share'] for r in sep])) if sep else float('nan'),
            corr_first=sum(r['first_finding'] == r['feature'] for r in sep),
            corr_wrong=sum(r['first_finding'] not in (None, r['feature']) for r in sep),
            decoy_driver=sum(r['decoy_verdict'].startswith('drives') for r in rs),
            decoy_significant=sum(r['decoy_perm_p'] < ALPHA_FIRST for r in rs),
            decoy_ranked_first=sum(r['decoy_rank'] == 1 and r['decoy_perm_p'] < ALPHA_FIRST for r in rs),
            random_ok=sum(r['random']['no_driver_presented'] for r in rs),
            random_chance_first=sum(r['random']['says_chance_first'] for r in rs),
            shuffled_ok=sum(r['shuffled']['no_driver_presented'] for r in rs if r['shuffled']),
            shuffled_chance_first=sum(r['shuffled']['says_chance_first'] for r in rs if r['shuffled']),
            shuffled_n=sum(r['shuffled'] is not None for r in rs), controls=len(ctl),
            median_acc=float(np.median([r['accuracy'] for r in rs])), median_s=float(np.median([r['seconds'] for r in rs])),
            per_seed=[dict(seed=r['seed'], beats_chance=r['beats_chance'], **{k: r.get(k) for k in CF_KEYS}) for r in rs]))
    return rows


def print_known_answers(rows:list):
    "The known-answer table: correlational and interventional evidence on the same models, then the controls."
    print(f"\nKnown answers (d = {STRENGTH:g}); among the seeds whose classifier beats chance (binomial p < 0.05):")
    print(f"{'planted cue':15s} {'beats chance':>12s} | {'corr.: first finding':>20s} {'corr.: wrong':>12s} | "
          f"{'interv.: largest |effect|, CI excl. 0':>37s} {'called driver':>13s} {'only driver':>11s} {'median share of gap':>19s}")
    for r in rows:
        n = r['beats_chance']
        print(f"{r['cue']:15s} {n:5d} / {r['seeds']:<4d} | {r['corr_first']:13d} / {n:<4d} {r['corr_wrong']:5d} / {n:<4d} | "
              f"{r['found']:30d} / {n:<4d} {r['called_driver']:6d} / {n:<4d} {r['only_driver']:4d} / {n:<4d} {r['share']:19.2f}")
    print(f"\n{'planted cue':15s} {'decoy called driver':>19s} {'decoy p < 0.01 in ranking':>25s} {'ranked first':>12s} {'random w.: no driver':>20s} "
          f"{'says chance first':>17s} {'shuffled: no driver':>19s} {'says chance first':>17s} {'median acc':>10s}")
    for r in rows:
        k, m = r['seeds'], r['shuffled_n']
        print(f"{r['cue']:15s} {r['decoy_driver']:12d} / {k:<4d} {r['decoy_significant']:18d} / {k:<4d} {r['decoy_ranked_first']:5d} / {k:<4d} {r['random_ok']:13d} / {k:<4d} "
              f"{r['random_chance_first']:10d} / {k:<4d} {r['shuffled_ok']:12d} / {m:<4d} {r['shuffled_chance_first']:10d} / {m:<4d} "
              f"{r['median_acc']:10.2f}")
    print("\nPer seed: reconstruction dB over the mean image and over PCA (same code size), counterfactual validity (share of validation "
          "images the model decides the other way), mean pixel change, share of images whose planted cue moves with the walk"
          " (* = the classifier beats chance)")
    fmt = lambda v, f: 'n/a' if v is None else format(v, f)
    for r in rows:
        cells = [f"{p['seed']}{'*' if p['beats_chance'] else ' '} {fmt(p['recon_vs_mean'], '+.1f')}/{fmt(p['recon_vs_pca'], '+.1f')} dB "
                 f"v {fmt(p['validity'], '.0%')} Δ {fmt(p['cf_size'], '.3f')} moves {fmt(p['planted_moves'], '.0%')}" for p in r['per_seed']]
        print(f"{r['cue']:15s} " + '; '.join(cells))
    tot = lambda key: sum(r[key] for r in rows)
    print(f"all cues: planted cue found {tot('found')}/{tot('beats_chance')} separating seeds; decoy called a driver "
          f"{tot('decoy_driver')}/{tot('seeds')}; random weights: no driver presented {tot('random_ok')}/{tot('seeds')}, "
          f"'does not beat chance' said first {tot('random_chance_first')}/{tot('seeds')}; shuffled labels: no driver presented "
          f"{tot('shuffled_ok')}/{tot('shuffled_n')}, 'does not beat chance' said first {tot('shuffled_chance_first')}/{tot('shuffled_n')}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--quick', action='store_true', help='2 cues x 2 seeds + 2 null seeds')
    ap.add_argument('--jobs', type=int, default=1, help='fidelity checks run at once, one process (one torch thread) each')
    ap.add_argument('--cues', default=None, help='comma-separated cues (default: all five; quick: brightness,center_texture)')
    ap.add_argument('--strength', type=float, default=STRENGTH, help="Cohen's d of the planted cue")
    ap.add_argument('--seeds', type=int, default=None, help='seeds per cue (default 10; quick 2)')
    ap.add_argument('--no-null', action='store_true', help='skip the strength-0 runs')
    ap.add_argument('--save', default=None, metavar='FILE', help='pickle every run\'s result (rankings included) to FILE')
    ap.add_argument('--known-answers', action='store_true', help='correlational and interventional evidence on the same models')
    ap.add_argument('--load', default=None, metavar='FILE', help='with --known-answers: print the runs pickled in FILE')
    args = ap.parse_args(argv)
    start = time.perf_counter()
    if args.known_answers:
        import pickle
        from pathlib import Path
        if args.load:
            with open(args.load, 'rb') as f: runs = pickle.load(f)
        else:
            sys.path.insert(0, str(Path(__file__).parent))
            from interventions import known_answers
            from tell_me_why.fidelity import PLANTED_CUES
            runs = known_answers(args.cues.split(',') if args.cues else list(PLANTED_CUES), list(range(args.seeds or 10)),
                                 args.jobs, save=args.save, size=48, n_per_class=100, epochs=(1, 4, 12))
        print_known_answers(known_answer_rows(runs))
        print(f"total {time.perf_counter() - start:.0f} s")
        return 0
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
