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

Known answers (issue 22): `--known-answers` trains, for each planted cue and seed, a small xAAEnet (`known_answer_run`,
defined here and also run by `bench/interventions.py --known-answers`; d = 2, 48 px, 100 images per class, epochs
1/4/12) and reads it both ways:
the correlational ranking (as above: PLS fit on the training codes, 499 shuffles) and the cue interventions
(`cue_interventions`). Among the seeds whose classifier beats chance on the validation images (binomial p < 0.05
against the larger class's share) it counts: the planted cue has the largest |effect| with a 95 % interval that
excludes 0 (target >= 90 %); the planted cue is called "drives the decision"; the median share of the class gap it
accounts for. Over all seeds: a decoy (a second cue added to the validation images of the planted class only, 2 SD
in the direction the model is sensitive to) is never called a driver, and how often the correlational ranking
(on the decoy images) finds it significant (p < 0.01) or ranks it first; a copy with random weights (every seed) and a model trained on shuffled labels (one cue per seed)
present no cue as driving the decision (target >= 90 %), and their report says first that they do not beat
chance.

Known answers on real photos (issue 28, part 5): `--tag` runs `tag_known_answer_run` for each seed (default 5; quick:
2 seeds, epochs 1/2/8 and 8): `make_planted_tag_dataset(seed=...)` writes the 120 bundled pets photos at 64 px in two
classes drawn at random, with a red 8-px tag in the top-right corner of 95 % of `tagged`; on one split (30 % held out)
it trains the checks' small xAAEnet (epochs 1/4/12, lr 1e-3, cross-entropy weight 1) and a plain fastai
`vision_learner(dls, resnet18, pretrained=False)` (12 epochs, one cycle at 3e-3), and reads each with
`cue_interventions(learn, cues=[*BUILTIN_CUES, patch_cue('red_tag', tag, box=box)])`. Per model, the table counts the
seeds whose model beats chance (the library's binomial test on the validation images) and, among them, the tag
called "drives the decision" and the tag with the largest |effect|; over all seeds, the built-in cues called drivers
(target: none). The classes are random, so only the tag can separate them. `on_trained(kind, learn, verdicts, info)`
hands each trained model to a caller (`bench/peers.py` reads Grad-CAM on it) while its images still exist.

    python bench/fidelity.py --tag --jobs 1 --save tag.pkl   # 5 seeds x (xAAEnet, ResNet-18)
    python bench/fidelity.py --tag --quick                    # 2 seeds, shorter training
    python bench/fidelity.py --tag --load tag.pkl             # print a saved run again

Each run is `fidelity_check` with its defaults (48-px images, 150 per class, a small convolutional encoder, epochs
1/5/15); about a minute per run on one core of this machine.
"""
from __future__ import annotations

import argparse, math, sys, tempfile, time
from pathlib import Path
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from scipy import stats
import torch

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


# ---------------------------------------------------------------------------------------------------------------
# The known-answer run on planted cues (issue 22, part 5): one model per planted cue and seed, read both ways.
# Its home is here; `bench/interventions.py --known-answers` and `bench/peers.py` run it from here.
# ---------------------------------------------------------------------------------------------------------------

def _decoy_items(valid, folder, cue, direction, strength=2.0):
    "Copies of the validation images, the planted class's shifted by `strength` SD of `cue` (in `direction`)."
    from PIL import Image
    from tell_me_why.interventions import calibrate_edit, cue_values
    x = torch.stack([torch.from_numpy(np.array(Image.open(p).convert('RGB'))).permute(2, 0, 1).float() / 255 for p in valid])
    planted = torch.tensor([Path(p).parent.name == 'planted' for p in valid])
    sd = cue_values(x, [cue])[cue].std()
    x[planted] = calibrate_edit(x[planted], cue, direction * strength * sd)[0]
    out = []
    for p, img in zip(valid, x):
        q = Path(folder)/Path(p).parent.name/Path(p).name
        q.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(q)
        out.append(q)
    return out


def _ranking(model, dls, table_fn, items=None, n_permutations=499, seed=0):
    "The correlational evidence (as `fidelity_check`): PLS fit on the training codes, cues of `items` (default: validation) on their codes."
    from tell_me_why.fidelity import CUE_FEATURES
    from tell_me_why.training import extract_latent_space
    from tell_me_why.visualization import pls_feature_alignment
    z_fit, y_fit = extract_latent_space(model, dls, 0)
    z_val, y_val = extract_latent_space(model, dls, 1) if items is None else _encode(model, dls, items)
    res = pls_feature_alignment(z_val, y_val.numpy(), table_fn(), CUE_FEATURES, fit_z=z_fit, fit_target=y_fit.numpy(),
                                n_permutations=n_permutations, seed=seed)
    return res['importance_rank'], res['target_perm_p_value']


def _encode(model, dls, items):
    from tell_me_why.interventions import model_image_batches
    zs, ys = [], []
    model.eval()
    batches, to_model, _ = model_image_batches(dls, items, 64)
    with torch.no_grad():
        for x, y in batches: zs.append(model.encode(to_model(x))); ys.append(y)
    return torch.cat(zs), torch.cat(ys)


def _first_of(rank, alpha=0.01):
    found = rank.feature[rank.perm_p_value < alpha]
    return found.iloc[0] if len(found) else None


def _control(res, beats=None):
    "What the report says for a control model (random weights, shuffled labels)."
    from tell_me_why.interventions import describe_interventions
    text = describe_interventions(res)
    drivers = list(res.cue[res.code == 'drives'])
    return dict(accuracy=res.attrs['accuracy'], beats_chance=res.attrs['beats_chance'], drivers=drivers,
                says_chance_first=text.startswith('The model does not beat chance'),
                no_driver_presented=not drivers)


def counterfactual_numbers(learn, feature:str|None, target_idx:int) -> dict:
    """Counterfactual images of the learner's validation images (`learner_counterfactuals`): validity, mean pixel change
    and, for a planted `feature`, the share of images whose feature changes from the image to its counterfactual the
    way it differs between the classes (towards the target class: up when the target class has more of it)."""
    from tell_me_why.counterfactuals import learner_counterfactuals
    cf = learner_counterfactuals(learn, None, target_idx, keep=0)
    out = dict(validity=cf['validity'], cf_size=cf['size'], planted_moves=None)
    if feature is not None and cf['labels'] is not None:
        v0, y = cf['cue_values'][:, 0, cf['cues'].index(feature)], cf['labels']
        rises = float(cf['table'].set_index('cue').rises_share[feature])
        out['planted_moves'] = rises if v0[y == target_idx].mean() > v0[y != target_idx].mean() else 1 - rises
    return out


def known_answer_run(cue:str, seed:int, size:int=48, n_per_class:int=100, epochs=(1, 4, 12), shuffled:bool=False,
                     on_trained=None) -> dict:
    """Train a small xAAEnet on a planted-cue set (d = 2); the interventions on it, on a validation-only decoy and with random
    weights; the correlational ranking of the same model; with `shuffled`, also a model trained on shuffled labels.
    The hook: `on_trained(learn, verdicts, decoy_verdicts, decoy)` is called once the verdicts on the validation and the
    decoy images are in (`decoy`: its `cue`, `direction` and image `items`), while the run's images still exist; what it
    returns is the result's `extra`."""
    torch.set_num_threads(1)
    from tell_me_why.data import two_class_dataloaders
    from tell_me_why.fidelity import (make_planted_cue_dataset, reinitialised_copy, PLANTED_CUES, CUE_FEATURES,
                                      _shuffled_label_dls)
    from tell_me_why.model_aae import small_xaaenet
    from tell_me_why.feature_scores import compute_feature_score_table
    from tell_me_why.training import train_xaaenet, split_items, quiet_training
    from tell_me_why.interventions import cue_interventions, describe_interventions
    feature = PLANTED_CUES[cue]
    decoy_cue = 'redness_dominance' if feature != 'redness_dominance' else 'brightness'
    t0 = time.perf_counter()
    kw = dict(lr_max=1e-3, grad_accum=1, classif_class_weight=1.0, save_tsne=False, save_pls=False, extract_latent=False,
              show_latent_figures=False, seed=seed)
    with tempfile.TemporaryDirectory() as tmp:
        make_planted_cue_dataset(Path(tmp)/'images', cue, 2.0, n_per_class=n_per_class, size=size, seed=seed)
        dls = two_class_dataloaders(Path(tmp)/'images', size=size, valid_pct=0.4, seed=seed, bs=16, progress=False)
        torch.manual_seed(seed)
        with quiet_training():
            learn = train_xaaenet(small_xaaenet(size, 32), dls, *epochs,
                                  models_dir=Path(tmp)/'models', **kw)
        valid = split_items(dls, 1)
        rank, axis_p = _ranking(learn.model, dls, lambda: compute_feature_score_table(valid, score_names=CUE_FEATURES, progress=False),
                                seed=seed)
        res_df = cue_interventions(learn, progress=False)
        res = res_df.set_index('cue')
        cf = counterfactual_numbers(learn, feature, list(dls.vocab).index('planted'))
        rec = learn.records['classifier']['reconstruction']
        direction = 1. if res.effect[decoy_cue] >= 0 else -1.
        decoy_items = _decoy_items(valid, Path(tmp)/'decoy', decoy_cue, direction)
        decoy_df = cue_interventions(learn, items=decoy_items, progress=False)
        decoy = decoy_df.set_index('cue')
        extra = None if on_trained is None else on_trained(learn, res_df, decoy_df, dict(cue=decoy_cue, direction=direction, items=decoy_items))
        decoy_rank, _ = _ranking(learn.model, dls, lambda: compute_feature_score_table(decoy_items, score_names=CUE_FEATURES,
                                                                                          progress=False), items=decoy_items, seed=seed)
        rnd = _control(cue_interventions(reinitialised_copy(learn.model, seed), dls=dls, progress=False))
        shuf = None
        if shuffled:
            train = split_items(dls, 0)
            labels = [Path(p).parent.name for p in train + valid]
            sdls = _shuffled_label_dls(dls, train + valid, labels, seed, len(valid))
            with quiet_training():
                slearn = train_xaaenet(reinitialised_copy(learn.model, seed + 1), sdls, *epochs, models_dir=Path(tmp)/'smodels', **kw)
            shuf = _control(cue_interventions(slearn.model, dls=dls, progress=False))  # judged against the true labels
    top = res.effect.abs().idxmax()
    prow = rank.set_index('feature').loc[feature]
    drow = decoy_rank.set_index('feature').loc[decoy_cue]
    return dict(cue=cue, seed=seed, feature=feature, accuracy=res.attrs['accuracy'], binom_p=res.attrs['binom_p'],
                beats_chance=res.attrs['beats_chance'], top=top, planted_effect=res.effect[feature],
                planted_ci=(res.ci_low[feature], res.ci_high[feature]), planted_verdict=res.verdict[feature],
                planted_share=res.share_of_gap[feature], effects=res.effect.to_dict(),
                found=bool(top == feature and (res.ci_low[feature] > 0 or res.ci_high[feature] < 0)),
                drivers=list(res.index[res.code == 'drives']), summary=describe_interventions(res.reset_index()),
                axis_perm_p=axis_p, planted_rank=int(prow['rank']), planted_perm_p=float(prow.perm_p_value),
                first_finding=_first_of(rank),
                decoy_cue=decoy_cue, decoy_gap=decoy.cue_class_gap[decoy_cue], decoy_effect=decoy.effect[decoy_cue],
                decoy_verdict=decoy.verdict[decoy_cue], decoy_called=decoy.code[decoy_cue] == 'drives', decoy_beats_chance=decoy.attrs['beats_chance'],
                decoy_rank=int(drow['rank']), decoy_perm_p=float(drow.perm_p_value),
                random=rnd, shuffled=shuf, extra=extra, seconds=time.perf_counter() - t0, **cf,
                recon_vs_mean=rec['psnr'] - rec['psnr_mean_image'], recon_vs_pca=rec['psnr'] - rec['psnr_pca'])


def _ka_star(args): return known_answer_run(*args)


def _ka_line(r):
    ctl = lambda c: 'n/a' if c is None else f"acc {c['accuracy']:.2f} drivers {c['drivers']}"
    return (f"  {r['cue']:15s} seed {r['seed']}: acc {r['accuracy']:.2f} (p {r['binom_p']:.2g}), top {r['top']}, "
            f"planted effect {r['planted_effect']:+.2f} [{r['planted_ci'][0]:+.2f}, {r['planted_ci'][1]:+.2f}] "
            f"share {r['planted_share']:+.2f} '{r['planted_verdict'][:40]}'; drivers {r['drivers']}; "
            f"ranking: planted rank {r['planted_rank']} p {r['planted_perm_p']:.3g} (axis p {r['axis_perm_p']:.3g}); "
            f"decoy {r['decoy_cue']} gap {r['decoy_gap']:+.2f} rank {r['decoy_rank']} p {r['decoy_perm_p']:.3g} "
            f"effect {r['decoy_effect']:+.2f} '{r['decoy_verdict'][:45]}'; random {ctl(r['random'])}; "
            f"shuffled {ctl(r['shuffled'])}; {r['seconds']:.0f} s")


def known_answers(cues, seeds, jobs:int=1, save=None, **kw):
    "Every (cue, seed) run; the shuffled-label model is trained on one cue per seed (cue `seed mod len(cues)`)."
    from concurrent.futures import ProcessPoolExecutor, as_completed
    tasks = [(c, s, *kw.values(), cues.index(c) == s % len(cues)) for c in cues for s in seeds]
    runs = []
    with ProcessPoolExecutor(max(1, jobs)) as pool:
        for f in as_completed([pool.submit(_ka_star, t) for t in tasks]):
            runs.append(f.result()); print(_ka_line(runs[-1]), flush=True)
            if save:
                import pickle
                with open(save, 'wb') as fh: pickle.dump(runs, fh)
    runs.sort(key=lambda r: (cues.index(r['cue']), r['seed']))
    return runs


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
            decoy_driver=sum(r['decoy_called'] for r in rs),
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


# ---------------------------------------------------------------------------------------------------------------
# Known answers on real photos (issue 28, part 5): a planted tag, an xAAEnet and a plain fastai ResNet-18
# ---------------------------------------------------------------------------------------------------------------

TAG_CUE, TAG_MODELS = 'red_tag', ('xAAEnet', 'ResNet-18')
TAG_DEFAULTS = dict(size=64, valid_pct=0.3, xaae_epochs=(1, 4, 12), resnet_epochs=12, resnet_lr=3e-3)
TAG_QUICK = dict(TAG_DEFAULTS, xaae_epochs=(1, 2, 8), resnet_epochs=8)


def plain_resnet18(dls, seed:int, epochs:int=12, lr:float=3e-3):
    "A plain fastai classifier: `vision_learner(dls, resnet18, pretrained=False)` (random init, no downloads) trained on `dls`."
    from fastai.vision.all import vision_learner, accuracy, set_seed
    from fastai.callback.progress import ProgressCallback
    from torchvision.models import resnet18
    set_seed(seed, reproducible=True)
    learn = vision_learner(dls, resnet18, pretrained=False, metrics=accuracy)
    learn.remove_cb(ProgressCallback)
    with learn.no_logging(): learn.fit_one_cycle(epochs, lr)
    return learn


def _tag_record(kind:str, seed:int, verdicts, train_s:float) -> dict:
    "What one tag model's verdicts say: the chance test, the tag's effect and verdict, the cue with the largest |effect|, built-in drivers."
    v = verdicts.set_index('cue')
    drivers = list(v.index[v.code == 'drives'])
    top = v.effect.abs().idxmax()
    return dict(task='tag', model=kind, seed=seed, accuracy=float(verdicts.attrs['accuracy']), binom_p=float(verdicts.attrs['binom_p']),
                beats_chance=bool(verdicts.attrs['beats_chance']), tag_effect=float(v.effect[TAG_CUE]),
                tag_ci=(float(v.ci_low[TAG_CUE]), float(v.ci_high[TAG_CUE])), tag_verdict=str(v.verdict[TAG_CUE]),
                top=top, tag_largest=bool(top == TAG_CUE), tag_driver=TAG_CUE in drivers,
                builtin_drivers=[d for d in drivers if d != TAG_CUE], effects=v.effect.to_dict(),
                train_seconds=train_s, interventions_seconds=float(verdicts.attrs['seconds']),
                seconds=train_s + float(verdicts.attrs['seconds']))


def tag_known_answer_run(seed:int, models=TAG_MODELS, size:int=64, valid_pct:float=0.3, xaae_epochs=(1, 4, 12),
                         resnet_epochs:int=12, resnet_lr:float=3e-3, on_trained=None) -> list[dict]:
    """The planted-tag known answer for one seed: `make_planted_tag_dataset(seed=seed)` (the bundled pets photos in two random
    classes, a red 8-px tag in the top-right corner of 95 % of `tagged`), the same split (`two_class_dataloaders`, `valid_pct`)
    for every model of `models`: 'xAAEnet' (the checks' small xAAEnet, trained as `fidelity_check` trains it: epochs
    `xaae_epochs`, lr 1e-3, cross-entropy weight 1) and 'ResNet-18' (`plain_resnet18`, as on the hypothesis page);
    each read by `cue_interventions(learn, cues=[*BUILTIN_CUES, patch_cue(TAG_CUE, tag, box=box)])` on the validation images.
    One record per model (`_tag_record`). The hook: `on_trained(kind, learn, verdicts, info)` is called for each trained
    model while its images exist (`info` is `make_planted_tag_dataset`'s, with the tag cue as `info['cue']`); what it
    returns is kept as the record's `extra`."""
    torch.set_num_threads(1)
    from fastai.torch_core import set_seed
    from tell_me_why.cues import BUILTIN_CUES, patch_cue
    from tell_me_why.data import two_class_dataloaders
    from tell_me_why.fidelity import make_planted_tag_dataset, _train_small
    from tell_me_why.interventions import cue_interventions
    unknown = set(models) - set(TAG_MODELS)
    if unknown: raise ValueError(f"`models` must be among {TAG_MODELS}, got {sorted(unknown)}")
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        info = make_planted_tag_dataset(tmp/'photos', size=size, seed=seed)
        info['cue'] = patch_cue(TAG_CUE, info['tag'], box=info['box'])
        for kind in models:
            set_seed(seed)  # each model's batches and weights depend on the seed only, not on what ran before it (a model, the hook)
            dls = two_class_dataloaders(tmp/'photos', label='folder', size=size, valid_pct=valid_pct, seed=seed, bs=16, progress=False)
            t0 = time.perf_counter()
            if kind == 'xAAEnet':
                learn = _train_small(dls, size, tmp/kind, seed, None, 32, tuple(xaae_epochs), True, None, lr_max=1e-3,
                                     classif_class_weight=1.0)
            else: learn = plain_resnet18(dls, seed, resnet_epochs, resnet_lr)
            train_s = time.perf_counter() - t0
            verdicts = cue_interventions(learn, cues=[*BUILTIN_CUES, info['cue']], target_class='tagged', progress=False, seed=seed)
            records.append(_tag_record(kind, seed, verdicts, train_s))
            if on_trained is not None: records[-1]['extra'] = on_trained(kind, learn, verdicts, info)
    return records


def _tag_line(r:dict) -> str:
    lo, hi = r['tag_ci']
    return (f"  tag seed {r['seed']} {r['model']:9s}: acc {r['accuracy']:.2f} (p {r['binom_p']:.2g}), largest |effect| {r['top']}, "
            f"tag effect {r['tag_effect']:+.2f} [{lo:+.2f}, {hi:+.2f}] '{r['tag_verdict'][:40]}', built-in drivers {r['builtin_drivers']}, "
            f"train {r['train_seconds']:.0f} s + interventions {r['interventions_seconds']:.0f} s")


def _tag_star(args):
    seed, kw = args
    return tag_known_answer_run(seed, **kw)


def tag_known_answers(seeds, jobs:int=1, save=None, verbose:bool=True, **kw) -> list[dict]:
    "`tag_known_answer_run` for every seed (in `jobs` processes); the records, saved to `save` after each seed."
    from concurrent.futures import ProcessPoolExecutor, as_completed
    records = []
    with ProcessPoolExecutor(max(1, jobs), initializer=_one_thread) as pool:
        for f in as_completed([pool.submit(_tag_star, (s, kw)) for s in seeds]):
            for r in f.result():
                records.append(r)
                if verbose: print(_tag_line(r), flush=True)
            if save:
                import pickle
                with open(save, 'wb') as fh: pickle.dump(records, fh)
    records.sort(key=lambda r: (r['seed'], TAG_MODELS.index(r['model'])))
    return records


def tag_rows(records:list) -> list[dict]:
    """Per model: seeds whose model beats chance; among them, the tag called "drives the decision" and the tag with the
    largest |effect|; over all seeds, built-in cues called drivers (seeds with any, and the calls); median seconds."""
    rows = []
    for kind in dict.fromkeys(r['model'] for r in records):
        rs = [r for r in records if r['model'] == kind]
        sep = [r for r in rs if r['beats_chance']]
        rows.append(dict(model=kind, seeds=len(rs), beats_chance=len(sep), tag_driver=sum(r['tag_driver'] for r in sep),
                         tag_largest=sum(r['tag_largest'] for r in sep),
                         claim=sum(r['tag_driver'] and r['tag_largest'] and not r['builtin_drivers'] for r in sep),
                         builtin_seeds=sum(bool(r['builtin_drivers']) for r in rs),
                         builtin_calls=sorted(d for r in rs for d in r['builtin_drivers']),
                         median_acc=float(np.median([r['accuracy'] for r in rs])),
                         median_tag_effect=float(np.median([r['tag_effect'] for r in sep])) if sep else float('nan'),
                         median_s=float(np.median([r['seconds'] for r in rs])),
                         median_train_s=float(np.median([r['train_seconds'] for r in rs]))))
    return rows


def print_tag_table(rows:list):
    "The planted-tag table, one row per model."
    print("\nPlanted tag on the pets photos (classes at random, a red tag in 95 % of one class); per model, over seeds. "
          "'beats chance': binomial p < 0.05 on the validation images; the tag columns count among those seeds.")
    print(f"{'model':9s} {'beats chance':>12s} {'tag called driver':>17s} {'tag largest |effect|':>20s} {'all three':>9s} "
          f"{'built-in drivers called':>23s} {'median acc':>10s} {'median tag effect':>17s} {'median s':>8s} {'(training)':>10s}")
    for r in rows:
        n, k = r['beats_chance'], r['seeds']
        calls = f"{r['builtin_seeds']} / {k}" + (f" {r['builtin_calls']}" if r['builtin_calls'] else '')
        print(f"{r['model']:9s} {n:6d} / {k:<3d} {r['tag_driver']:10d} / {n:<3d} {r['tag_largest']:13d} / {n:<3d} {r['claim']:3d} / {n:<3d} "
              f"{calls:>23s} {r['median_acc']:10.2f} {r['median_tag_effect']:17.2f} {r['median_s']:8.0f} {r['median_train_s']:10.0f}")


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
    ap.add_argument('--load', default=None, metavar='FILE', help='with --known-answers or --tag: print the runs pickled in FILE')
    ap.add_argument('--tag', action='store_true', help='known answer on real photos: a planted tag, an xAAEnet and a plain ResNet-18 '
                    'per seed (default 5 seeds; quick: 2 seeds, shorter training)')
    args = ap.parse_args(argv)
    start = time.perf_counter()
    if args.tag:
        import pickle
        if args.load:
            with open(args.load, 'rb') as f: records = pickle.load(f)
        else:
            kw = TAG_QUICK if args.quick else TAG_DEFAULTS
            records = tag_known_answers(list(range(args.seeds or (2 if args.quick else 5))), args.jobs, save=args.save, **kw)
        print_tag_table(tag_rows(records))
        print(f"total {time.perf_counter() - start:.0f} s")
        return 0
    if args.known_answers:
        import pickle
        if args.load:
            with open(args.load, 'rb') as f: runs = pickle.load(f)
        else:
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
