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
seed, train an xAAEnet, run `cue_interventions` on the validation images and count, among the seeds whose model
beats chance (binomial p < 0.05): the planted cue has the largest |effect| with a CI excluding 0; it is the only
cue called "drives the decision". Over all seeds: a decoy (redness, or brightness when redness is planted) added
to the validation images of the planted class only, 2 SD in the direction the model is sensitive to, is never
called a driver; a copy with random weights gets the chance gate (or, if it happens to beat chance, names no
driver).
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
    from tell_me_why.fidelity import make_planted_cue_dataset, small_encoder
    from tell_me_why.model_aae import XAAEBase, AAE
    from tell_me_why.interventions import cue_interventions, model_image_batches, BUILTIN_CUES
    with tempfile.TemporaryDirectory() as tmp:
        make_planted_cue_dataset(Path(tmp)/'images', 'brightness', 2.0, n_per_class=n_images, size=size, seed=0)
        dls = two_class_dataloaders(Path(tmp)/'images', size=size, valid_pct=0.5, seed=0, bs=16, progress=False)
        torch.manual_seed(0)
        if arch == 'small': model = XAAEBase(small_encoder(), input_size=size, encoding_dims=32)
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


def known_answer_run(cue:str, seed:int, size:int=48, n_per_class:int=100, epochs=(1, 4, 12)) -> dict:
    "Train a small xAAEnet on a planted-cue set (d = 2) and run the interventions on it, on a decoy set and with random weights."
    torch.set_num_threads(1)
    from tell_me_why.data import two_class_dataloaders
    from tell_me_why.fidelity import make_planted_cue_dataset, small_encoder, reinitialised_copy, _quiet_training, PLANTED_CUES
    from tell_me_why.model_aae import XAAEBase
    from tell_me_why.training import train_xaaenet, split_items
    from tell_me_why.interventions import cue_interventions
    feature = PLANTED_CUES[cue]
    decoy_cue = 'redness_dominance' if feature != 'redness_dominance' else 'brightness'
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        make_planted_cue_dataset(Path(tmp)/'images', cue, 2.0, n_per_class=n_per_class, size=size, seed=seed)
        dls = two_class_dataloaders(Path(tmp)/'images', size=size, valid_pct=0.4, seed=seed, bs=16, progress=False)
        torch.manual_seed(seed)
        with _quiet_training():
            learn = train_xaaenet(XAAEBase(small_encoder(), input_size=size, encoding_dims=32), dls, *epochs, lr_max=1e-3,
                                  grad_accum=1, classif_class_weight=1.0, save_tsne=False, save_pls=False,
                                  extract_latent=False, show_latent_figures=False, seed=seed, models_dir=Path(tmp)/'models')
        res = cue_interventions(learn, progress=False).set_index('cue')
        direction = 1. if res.effect[decoy_cue] >= 0 else -1.
        decoy = cue_interventions(learn, items=_decoy_items(split_items(dls, 1), Path(tmp)/'decoy', decoy_cue, direction),
                                  progress=False).set_index('cue')
        rnd = cue_interventions(reinitialised_copy(learn.model, seed), dls=dls, progress=False)
    top = res.effect.abs().idxmax()
    return dict(cue=cue, seed=seed, feature=feature, accuracy=res.attrs['accuracy'], binom_p=res.attrs['binom_p'],
                beats_chance=res.attrs['beats_chance'], top=top, planted_effect=res.effect[feature],
                planted_ci=(res.ci_low[feature], res.ci_high[feature]), planted_verdict=res.verdict[feature],
                planted_share=res.share_of_gap[feature],
                found=bool(top == feature and (res.ci_low[feature] > 0 or res.ci_high[feature] < 0)),
                drivers=list(res.index[res.verdict.str.startswith('drives')]),
                decoy_cue=decoy_cue, decoy_gap=decoy.cue_class_gap[decoy_cue], decoy_effect=decoy.effect[decoy_cue],
                decoy_verdict=decoy.verdict[decoy_cue], decoy_beats_chance=decoy.attrs['beats_chance'],
                random_accuracy=rnd.attrs['accuracy'], random_beats_chance=rnd.attrs['beats_chance'],
                random_drivers=list(rnd.cue[rnd.verdict.str.startswith('drives')]),
                random_all_gated=bool(rnd.verdict.str.startswith('not judged').all()), seconds=time.perf_counter() - t0)


def _star(args): return known_answer_run(*args)


def _line(r):
    return (f"  {r['cue']:15s} seed {r['seed']}: acc {r['accuracy']:.2f} (p {r['binom_p']:.2g}), top {r['top']}, "
            f"planted effect {r['planted_effect']:+.2f} [{r['planted_ci'][0]:+.2f}, {r['planted_ci'][1]:+.2f}] "
            f"share {r['planted_share']:+.2f} '{r['planted_verdict'][:40]}'; drivers {r['drivers']}; "
            f"decoy {r['decoy_cue']} gap {r['decoy_gap']:+.2f} effect {r['decoy_effect']:+.2f} '{r['decoy_verdict'][:45]}'; "
            f"random acc {r['random_accuracy']:.2f} drivers {r['random_drivers']}; {r['seconds']:.0f} s")


def known_answers(cues, seeds, jobs:int=1, **kw):
    from concurrent.futures import ProcessPoolExecutor, as_completed
    tasks = [(c, s, *kw.values()) for c in cues for s in seeds]
    runs = []
    with ProcessPoolExecutor(max(1, jobs)) as pool:
        for f in as_completed([pool.submit(_star, t) for t in tasks]):
            runs.append(f.result()); print(_line(runs[-1]), flush=True)
    runs.sort(key=lambda r: (cues.index(r['cue']), r['seed']))
    print(f"\n{'planted cue':15s} {'beats chance':>12s} {'planted first, CI excl. 0':>26s} {'only driver':>12s} "
          f"{'decoy called driver':>20s} {'random: gated':>14s} {'median acc':>10s}")
    for c in cues:
        rs = [r for r in runs if r['cue'] == c]
        sep = [r for r in rs if r['beats_chance']]
        found = sum(r['found'] for r in sep)
        only = sum(r['drivers'] == [r['feature']] for r in sep)
        decoy_bad = sum(r['decoy_verdict'].startswith('drives') for r in rs)
        gated = sum(r['random_all_gated'] or bool(r['random_beats_chance']) and not r['random_drivers'] for r in rs)
        import numpy as np
        print(f"{c:15s} {len(sep):5d} / {len(rs):<4d} {found:12d} / {len(sep):<11d} {only:5d} / {len(sep):<4d} "
              f"{decoy_bad:9d} / {len(rs):<8d} {gated:6d} / {len(rs):<5d} {np.median([r['accuracy'] for r in rs]):9.2f}")
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
    a = ap.parse_args()
    if a.known_answers: known_answers(a.cues, list(range(a.seeds)), a.jobs, size=48, n_per_class=a.per_class, epochs=tuple(a.epochs))
    else:
        print(f"{'arch':9s} {'size':>4s} {'n':>4s} {'encode pass':>12s} {'encode only':>12s} {'interventions':>14s} {'÷ pass':>7s} {'÷ encode':>9s}")
        for arch in a.arch:
            for size in a.size:
                r = run(size, arch, a.images, a.repeats)
                print(f"{arch:9s} {size:4d} {r['n']:4d} {r['encode_pass_s']:11.3f}s {r['encode_tensors_s']:11.3f}s "
                      f"{r['interventions_s']:13.2f}s {r['ratio_pass']:6.0f}x {r['ratio_net']:8.0f}x", flush=True)
