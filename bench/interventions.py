"""Cost of the cue interventions (issue 22, part 6): time of `cue_interventions` (every built-in cue x 4 doses)
over the time of one encoding pass over the same images.

The images are a planted-brightness set (`make_planted_cue_dataset`, 128 validation images). The model is not
trained: cost does not depend on the weights. Two encoders: `small_encoder` (the tests' model) and a
ResNet-18 body (random weights), at the size given. One encoding pass is timed two ways: iterating the test
DataLoader and encoding every batch (what a pass over the images costs), and encoding tensors already in memory
(the network alone). Everything runs on one torch thread (`cue_interventions`' default), each timing the best
of `--repeats`.

    python bench/interventions.py              # 48 px and 96 px, both encoders
    python bench/interventions.py --size 64 --repeats 1
    python bench/interventions.py --known-answers --seeds 10 --jobs 2   # planted cues x seeds (see `known_answers`)

Known answers: for each planted cue (d = 2, 48 px, 100 images per class, epochs 1/4/12, `small_encoder`) and
seed, train an xAAEnet and read it two ways: `cue_interventions` on the validation images, and the correlational
ranking (PLS fit on the training codes, as `fidelity_check`). Also: a decoy (redness, or brightness when redness
is planted) added to the validation images of the planted class only, 2 SD in the direction the model is
sensitive to; a copy with random weights; for one cue per seed, a model trained on shuffled labels (judged against
the true labels). The counts (among the seeds whose model beats chance, binomial p < 0.05: the planted cue has the
largest |effect| with a CI excluding 0, is called a driver, is the only driver, its share of the class gap; over all
seeds: decoy called a driver, controls presenting a driver) are printed by `bench/fidelity.py`'s
`print_known_answers`, which `bench/fidelity.py --known-answers` also runs.
"""
from __future__ import annotations

import argparse, tempfile, time
from pathlib import Path

import torch


def _best(fn, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter(); fn(); times.append(time.perf_counter() - t)
    return min(times)


def run(size:int, arch:str, n_images:int=128, repeats:int=3, bs:int=64) -> dict:
    from tell_me_why.data import two_class_dataloaders
    from tell_me_why.fidelity import make_planted_cue_dataset, small_xaaenet
    from tell_me_why.model_aae import AAE
    from tell_me_why.interventions import cue_interventions, model_image_batches, BUILTIN_CUES
    with tempfile.TemporaryDirectory() as tmp:
        make_planted_cue_dataset(Path(tmp)/'images', 'brightness', 2.0, n_per_class=n_images, size=size, seed=0)
        dls = two_class_dataloaders(Path(tmp)/'images', size=size, valid_pct=0.5, seed=0, bs=16, progress=False)
        torch.manual_seed(0)
        if arch == 'small': model = small_xaaenet(size, 32)
        else:
            from torchvision.models import resnet18
            model = AAE(input_size=size, encoding_dims=128, arch=resnet18, pretrained=False)
        model.eval()
        items = list(dls.valid.items)
        old = torch.get_num_threads(); torch.set_num_threads(1)
        try:
            def encode_pass():
                batches, to_model, _ = model_image_batches(dls, items, bs)
                with torch.no_grad():
                    for x, _ in batches: model.encode(to_model(x))
            x_all = torch.cat([x for x, _ in model_image_batches(dls, items, bs)[0]])
            def encode_tensors():
                with torch.no_grad():
                    for i in range(0, len(x_all), bs): model.encode(x_all[i:i + bs])
            t_pass, t_net = _best(encode_pass, repeats), _best(encode_tensors, repeats)
        finally: torch.set_num_threads(old)
        t_iv = _best(lambda: cue_interventions(model, items=items, dls=dls, bs=bs, progress=False, n_boot=1000), repeats)
    return dict(size=size, arch=arch, n=len(items), cues=len(BUILTIN_CUES), encode_pass_s=t_pass, encode_tensors_s=t_net,
                interventions_s=t_iv, ratio_pass=t_iv / t_pass, ratio_net=t_iv / t_net)


# ---------------------------------------------------------------------------------------------------------------
# Known answers (issue 22, part 5): `python bench/interventions.py --known-answers [--seeds 10] [--jobs 2]`
# ---------------------------------------------------------------------------------------------------------------

def _decoy_items(valid, folder, cue, direction, strength=2.0):
    "Copies of the validation images, the planted class's shifted by `strength` SD of `cue` (in `direction`)."
    import numpy as np
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
                                n_permutations=n_permutations, random_state=seed)
    return res['importance_rank'], res['target_perm_p_value']


def _encode(model, dls, items):
    from tell_me_why.interventions import model_image_batches
    zs, ys = [], []
    model.eval()
    batches, to_model, _ = model_image_batches(dls, items, 64)
    with torch.no_grad():
        for x, y in batches: zs.append(model.encode(to_model(x))); ys.append(y)
    return torch.cat(zs), torch.cat(ys)


def _first_finding(rank, alpha=0.01):
    found = rank.feature[rank.perm_p_value < alpha]
    return found.iloc[0] if len(found) else None


def _control(res, beats=None):
    "What the report says for a control model (random weights, shuffled labels)."
    from tell_me_why.interventions import describe_interventions
    text = describe_interventions(res)
    drivers = list(res.cue[res.verdict.str.startswith('drives')])
    return dict(accuracy=res.attrs['accuracy'], beats_chance=res.attrs['beats_chance'], drivers=drivers,
                says_chance_first=text.startswith('The model does not beat chance'),
                no_driver_presented=not drivers)


def counterfactual_numbers(learn, feature:str|None, target_idx:int) -> dict:
    """Counterfactual images of the learner's validation images (`learner_counterfactuals`): validity, mean pixel change
    and, for a planted `feature`, the share of images whose feature changes from the image to its counterfactual the
    way it differs between the classes (towards the target class: up when the target class has more of it)."""
    import numpy as np
    from tell_me_why.counterfactuals import learner_counterfactuals
    cf = learner_counterfactuals(learn, None, target_idx, keep=0)
    out = dict(validity=cf['validity'], cf_size=cf['size'], planted_moves=None)
    if feature is not None and cf['labels'] is not None:
        v0, y = cf['cue_values'][:, 0, cf['cues'].index(feature)], cf['labels']
        rises = float(cf['table'].set_index('cue').rises_share[feature])
        out['planted_moves'] = rises if v0[y == target_idx].mean() > v0[y != target_idx].mean() else 1 - rises
    return out


def known_answer_run(cue:str, seed:int, size:int=48, n_per_class:int=100, epochs=(1, 4, 12), shuffled:bool=False) -> dict:
    """Train a small xAAEnet on a planted-cue set (d = 2); the interventions on it, on a validation-only decoy and with random
    weights; the correlational ranking of the same model; with `shuffled`, also a model trained on shuffled labels."""
    torch.set_num_threads(1)
    import numpy as np
    from tell_me_why.data import two_class_dataloaders
    from tell_me_why.fidelity import (make_planted_cue_dataset, small_xaaenet, reinitialised_copy, PLANTED_CUES,
                                      CUE_FEATURES, _shuffled_label_dls)
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
        res = cue_interventions(learn, progress=False).set_index('cue')
        cf = counterfactual_numbers(learn, feature, list(dls.vocab).index('planted'))
        rec = learn.records['classifier']['reconstruction']
        direction = 1. if res.effect[decoy_cue] >= 0 else -1.
        decoy_items = _decoy_items(valid, Path(tmp)/'decoy', decoy_cue, direction)
        decoy = cue_interventions(learn, items=decoy_items, progress=False).set_index('cue')
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
                drivers=list(res.index[res.verdict.str.startswith('drives')]), summary=describe_interventions(res.reset_index()),
                axis_perm_p=axis_p, planted_rank=int(prow['rank']), planted_perm_p=float(prow.perm_p_value),
                first_finding=_first_finding(rank),
                decoy_cue=decoy_cue, decoy_gap=decoy.cue_class_gap[decoy_cue], decoy_effect=decoy.effect[decoy_cue],
                decoy_verdict=decoy.verdict[decoy_cue], decoy_beats_chance=decoy.attrs['beats_chance'],
                decoy_rank=int(drow['rank']), decoy_perm_p=float(drow.perm_p_value),
                random=rnd, shuffled=shuf, seconds=time.perf_counter() - t0, **cf,
                recon_vs_mean=rec['psnr'] - rec['psnr_mean_image'], recon_vs_pca=rec['psnr'] - rec['psnr_pca'])


def _star(args): return known_answer_run(*args)


def _line(r):
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
        for f in as_completed([pool.submit(_star, t) for t in tasks]):
            runs.append(f.result()); print(_line(runs[-1]), flush=True)
            if save:
                import pickle
                with open(save, 'wb') as fh: pickle.dump(runs, fh)
    runs.sort(key=lambda r: (cues.index(r['cue']), r['seed']))
    return runs


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--size', type=int, nargs='*', default=[48, 96])
    ap.add_argument('--arch', nargs='*', default=['small', 'resnet18'])
    ap.add_argument('--images', type=int, default=128)
    ap.add_argument('--repeats', type=int, default=3)
    ap.add_argument('--known-answers', action='store_true', help='train on planted cues and count what the interventions find')
    ap.add_argument('--cues', nargs='*', default=['brightness', 'redness', 'symmetry', 'center_texture', 'high_frequency'])
    ap.add_argument('--seeds', type=int, default=10)
    ap.add_argument('--jobs', type=int, default=1)
    ap.add_argument('--per-class', type=int, default=100, help='images per class of the planted sets')
    ap.add_argument('--epochs', type=int, nargs=3, default=[1, 4, 12], help='adversarial, autoencoder, classifier epochs')
    ap.add_argument('--save', default=None, metavar='FILE', help='pickle the known-answer runs to FILE (after each run)')
    a = ap.parse_args()
    if a.known_answers:
        import sys
        sys.path.insert(0, str(Path(__file__).parent))
        from fidelity import known_answer_rows, print_known_answers
        runs = known_answers(a.cues, list(range(a.seeds)), a.jobs, save=a.save, size=48, n_per_class=a.per_class, epochs=tuple(a.epochs))
        print_known_answers(known_answer_rows(runs))
    else:
        print(f"{'arch':9s} {'size':>4s} {'n':>4s} {'encode pass':>12s} {'encode only':>12s} {'interventions':>14s} {'÷ pass':>7s} {'÷ encode':>9s}")
        for arch in a.arch:
            for size in a.size:
                r = run(size, arch, a.images, a.repeats)
                print(f"{arch:9s} {size:4d} {r['n']:4d} {r['encode_pass_s']:11.3f}s {r['encode_tensors_s']:11.3f}s "
                      f"{r['interventions_s']:13.2f}s {r['ratio_pass']:6.0f}x {r['ratio_net']:8.0f}x", flush=True)
