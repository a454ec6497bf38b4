"""Benchmark of the decoder (issue 27): does the trained xAAEnet draw the held-out images better than a
constant image, and how far is it from PCA with the same code size?

Each run trains an xAAEnet the way `tmw-explain` does for one set-up and reads the reconstruction check that
`train_xaaenet` makes after every phase (`reconstruction_report`: eval mode, the validation images, PSNR and SSIM
of the decoder's reconstructions, of the mean training image and of PCA with `encoding_dims` components fitted on
the training images). It prints one row per run and a summary per set-up: the decoder's PSNR after the classifier
phase (the model the report explains), its margin over the mean image and its gap to PCA, in dB, with the
classifier's validation accuracy, the prior's two-sample AUC (training codes against N(0, I), eval mode) after the autoencoder
phase (`AE AUC`; target on the pets job: <= 0.85), the same on the held-out validation codes (`held`) and after the classifier
phase (`AUC`), and the wall time.

Set-ups:
- `brightness`, `redness`: the `--planted` showcase (48 px, small encoder, 32-d codes, 2 x 150 images, d = 2),
  with `JobSettings.showcase()`. Target: the decoder beats the mean image by >= 3 dB in every seed.
- `pets`: the default job on the bundled pet photos (128 px, ResNet-18 from scratch, 128-d), `JobSettings()`.
- `walkthrough`: the walkthrough's set-up (300 px, ResNet-34 from scratch, 128-d, epochs 1/1/2, bs 16,
  `train_xaaenet`'s other defaults) on the 184 shared pet photos (`../shared/data/pets_sample`).
Target for the last two: the decoder beats the mean image.

`--compare` adds, for every run, the same training with the seed's reconstruction loss and the plain sum of the
gradients at z (`recons_func='ms-ssim', adv_balance=None`) and, for the showcases, the earlier showcase settings
(lr_max 1e-3, lr_max_factor 3, epochs 4/5/15): the "before" column. The decoder's zero-initialised linear path is
in both (a model cannot be built without it), so "before" is not exactly the code before this change.

    python bench/decoder.py --jobs 2                      # showcases x 5 seeds, pets x 5 seeds, walkthrough x 1
    python bench/decoder.py --jobs 2 --compare            # with the "before" runs, for the wall-time ratio
    python bench/decoder.py --setups brightness --seeds 2 # a quick look
    python bench/decoder.py --load rows.jsonl             # the tables of a run saved with --save rows.jsonl
"""
from __future__ import annotations

import argparse, contextlib, io, json, os, sys, tempfile, time, warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

SETUPS = ('brightness', 'redness', 'pets', 'walkthrough')
SHARED_PETS = Path(__file__).resolve().parents[2]/'shared'/'data'/'pets_sample'
OLD_SHOWCASE = dict(lr_max=1e-3, lr_max_factor=3., epochs=(4, 5, 15))  # the showcase's settings before issue 27


def _settings(setup:str) -> dict:
    "Data, model and training settings of a set-up, from the command line's defaults."
    from tell_me_why.cli import JobSettings
    if setup == 'walkthrough':
        return dict(size=300, arch='resnet34', encoding_dims=128, epochs=(1, 1, 2), lr_max=1e-4, lr_max_factor=3., valid_pct=0.2,
                    classif_class_weight=0.001, bs=16, grad_accum=None)
    s = JobSettings.showcase(setup) if setup in ('brightness', 'redness') else JobSettings()
    return dict(size=s.size, arch=s.arch, encoding_dims=s.encoding_dims, epochs=s.epochs, lr_max=s.lr_max, lr_max_factor=s.lr_max_factor,
                valid_pct=s.valid_pct, classif_class_weight=s.classif_class_weight, bs=None, grad_accum=None)


def _data(setup:str, s:dict, seed:int, work:Path):
    from tell_me_why import pipeline as P
    from tell_me_why.data import sample_data_path
    from tell_me_why.fidelity import make_planted_cue_dataset
    if setup in ('brightness', 'redness'):
        make_planted_cue_dataset(work/'images', setup, 2.0, n_per_class=150, size=s['size'], seed=seed, overwrite=True)
        folder, label, class_a = work/'images', 'folder', 'planted'
    elif setup == 'pets': folder, label, class_a = sample_data_path()/'images', 'pets', None
    else:
        if not SHARED_PETS.is_dir(): raise FileNotFoundError(f"the walkthrough set-up needs the shared pet photos in {SHARED_PETS}")
        folder, label, class_a = SHARED_PETS, 'pets', None
    return P.prepare_data(folder, label, s['size'], s['valid_pct'], seed, s['bs'], s['grad_accum'], s['epochs'], class_a)


def run_one(setup:str, seed:int, before:bool=False, threads:int=1) -> dict:
    "Train one set-up with one seed; the reconstruction check after the classifier phase, accuracy, prior and wall time."
    import torch
    torch.set_num_threads(threads)
    warnings.filterwarnings('ignore')
    from tell_me_why import pipeline as P
    from tell_me_why.training import train_xaaenet, quiet_training
    s = _settings(setup)
    if before and setup in ('brightness', 'redness'): s.update(OLD_SHOWCASE)
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        with contextlib.redirect_stdout(io.StringIO()): data = _data(setup, s, seed, work)
        model = P.build_model(s['arch'], s['size'], s['encoding_dims'], seed)
        extra = dict(recons_func='ms-ssim', adv_balance=None) if before else {}
        start = time.perf_counter()
        with quiet_training():
            learn = train_xaaenet(model, data.dls, *s['epochs'], lr_max=s['lr_max'], lr_max_factor=s['lr_max_factor'],
                                  classif_class_weight=s['classif_class_weight'], grad_accum=data.plan['grad_accum'], models_dir=work/'models',
                                  pls_target_class=data.class_a, seed=seed, patience=max(3, s['epochs'][2]), save_tsne=False, save_pls=False,
                                  extract_latent=False, show_latent_figures=False, **extra)
        secs = time.perf_counter() - start
        sys.path.insert(0, str(Path(__file__).parent))
        from interventions import counterfactual_numbers
        from tell_me_why.fidelity import PLANTED_CUES
        cf = counterfactual_numbers(learn, PLANTED_CUES.get(setup), data.vocab.index(data.class_a))
    recs = learn.records
    rec = recs['classifier']['reconstruction']
    return dict(setup=setup, seed=seed, before=before, secs=secs, psnr=rec['psnr'], psnr_mean_image=rec['psnr_mean_image'],
                psnr_pca=rec['psnr_pca'], ssim=rec['ssim'], ssim_mean_image=rec['ssim_mean_image'], n=rec['n'],
                psnr_ae=recs['autoencoder']['reconstruction']['psnr'], accuracy=recs['classifier'].get('kept_valid_accuracy'),
                prior_auc={ph: round(float(r['two_sample_auc']), 3) for ph, r in learn.prior_reports.items()},
                prior_auc_valid={ph: round(float(r['prior_valid']['two_sample_auc']), 3) for ph, r in recs.items() if r.get('prior_valid')},
                generator_steps_adv=recs['adversarial'].get('optimizer_steps'), **cf)


def _row(r:dict) -> str:
    acc = r['accuracy']
    return (f"{r['setup']:<12}{r['seed']:>5}  {'before' if r['before'] else 'now':<7}{r['psnr']:>7.2f}{r['psnr_mean_image']:>7.2f}"
            f"{r['psnr_pca']:>7.2f}{r['psnr'] - r['psnr_mean_image']:>+8.2f}{r['psnr'] - r['psnr_pca']:>+8.2f}{r['psnr_ae']:>8.2f}"
            f"{'' if acc is None else f'{acc:.2f}':>6}{r['prior_auc'].get('autoencoder', float('nan')):>7.2f}"
            f"{r.get('prior_auc_valid', {}).get('autoencoder', float('nan')):>7.2f}{r['prior_auc'].get('classifier', float('nan')):>6.2f}{r['secs']:>7.0f}"
            f"{_pct(r.get('validity')):>7}{_pct(r.get('planted_moves')):>7}")


def _pct(v) -> str: return '' if v is None else f"{v:.0%}"


HEADER = (f"{'set-up':<12}{'seed':>5}  {'run':<7}{'dB':>7}{'mean':>7}{'PCA':>7}{'vs mean':>8}{'vs PCA':>8}{'AE dB':>8}{'acc':>6}{'AE AUC':>7}{'held':>7}{'AUC':>6}{'secs':>7}{'valid':>7}{'moves':>7}")


def summary(rows:list) -> str:
    "Per set-up and run kind: seeds, median margin over the mean image, worst margin, median gap to PCA, median wall time."
    import numpy as np
    out = [f"{'set-up':<12}{'run':<8}{'seeds':>6}{'median vs mean':>16}{'worst vs mean':>15}{'median vs PCA':>15}{'median secs':>13}"
           f"{'worst validity':>16}{'worst moves':>13}"]
    worst = lambda rs, k: _pct(min([r[k] for r in rs if r.get(k) is not None], default=None))
    for setup in SETUPS:
        for before in (False, True):
            rs = [r for r in rows if r['setup'] == setup and r['before'] == before]
            if not rs: continue
            m = np.array([r['psnr'] - r['psnr_mean_image'] for r in rs]); p = np.array([r['psnr'] - r['psnr_pca'] for r in rs])
            out.append(f"{setup:<12}{'before' if before else 'now':<8}{len(rs):>6}{np.median(m):>+16.2f}{m.min():>+15.2f}{np.median(p):>+15.2f}"
                       f"{np.median([r['secs'] for r in rs]):>13.0f}{worst(rs, 'validity'):>16}{worst(rs, 'planted_moves'):>13}")
    return '\n'.join(out)


def markdown(rows:list) -> str:
    "The per-seed table of the README: dB over the mean image per seed, the median gap to PCA and the median wall time."
    import numpy as np
    seeds = sorted({r['seed'] for r in rows})
    out = ['| set-up | run | ' + ' | '.join(f'seed {s}' for s in seeds) + ' | vs PCA (median) | seconds (median) |',
           '|---|---|' + '---|' * len(seeds) + '---|---|']
    for setup in SETUPS:
        for before in (False, True):
            rs = {r['seed']: r for r in rows if r['setup'] == setup and r['before'] == before}
            if not rs: continue
            cells = [f"{rs[s]['psnr'] - rs[s]['psnr_mean_image']:+.2f}" if s in rs else '' for s in seeds]
            pca = np.median([r['psnr'] - r['psnr_pca'] for r in rs.values()]); secs = np.median([r['secs'] for r in rs.values()])
            out.append(f"| {setup} | {'before' if before else 'now'} | " + ' | '.join(cells) + f" | {pca:+.2f} | {secs:.0f} |")
    return '\n'.join(out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--setups', nargs='+', choices=SETUPS, default=list(SETUPS))
    p.add_argument('--seeds', type=int, default=5, help='seeds per set-up (the walkthrough set-up: at most --walkthrough-seeds)')
    p.add_argument('--walkthrough-seeds', type=int, default=1)
    p.add_argument('--compare', action='store_true', help='also train each run with the settings before issue 27')
    p.add_argument('--jobs', type=int, default=1, help='runs side by side, one torch thread each')
    p.add_argument('--save', metavar='FILE', help='write the rows as JSON lines')
    p.add_argument('--load', metavar='FILE', help='print the tables of rows saved with --save, without training')
    a = p.parse_args(argv)
    if a.load:
        rows = [json.loads(l) for l in open(a.load) if l.strip()]
        print(HEADER); print('\n'.join(_row(r) for r in rows)); print('\n' + summary(rows) + '\n\n' + markdown(rows))
        return
    runs = [(setup, seed, before) for setup in a.setups for seed in range(min(a.seeds, a.walkthrough_seeds) if setup == 'walkthrough' else a.seeds)
            for before in ((False, True) if a.compare else (False,))]
    print(f"{len(runs)} runs, {a.jobs} at a time; PSNR in dB on the validation images after the classifier phase (eval mode)\n{HEADER}", flush=True)
    rows, threads = [], 1 if a.jobs > 1 else os.cpu_count()
    with ProcessPoolExecutor(a.jobs) as pool:
        futures = [pool.submit(run_one, setup, seed, before, threads) for setup, seed, before in runs]
        for f in futures:
            r = f.result(); rows.append(r); print(_row(r), flush=True)
            if a.save:
                with open(a.save, 'a') as fh: fh.write(json.dumps(r) + '\n')
    print('\n' + summary(rows) + '\n\n' + markdown(rows))
    showcase = [r for r in rows if r['setup'] in ('brightness', 'redness') and not r['before']]
    if showcase: print(f"\nshowcase target (>= 3 dB over the mean image in every seed): "
                       f"{sum(r['psnr'] - r['psnr_mean_image'] >= 3 for r in showcase)} of {len(showcase)} runs")
    for setup in ('pets', 'walkthrough'):
        rs = [r for r in rows if r['setup'] == setup and not r['before']]
        if rs: print(f"{setup} target (beats the mean image): {sum(r['psnr'] > r['psnr_mean_image'] for r in rs)} of {len(rs)} runs")
    rs = [r for r in rows if r['setup'] == 'pets' and not r['before'] and 'autoencoder' in r['prior_auc']]
    if rs: print(f"pets prior target (two-sample AUC of the training codes after the autoencoder phase <= 0.85): "
                  f"{sum(r['prior_auc']['autoencoder'] <= 0.85 for r in rs)} of {len(rs)} runs; held-out codes: "
                  + ', '.join(f"{r.get('prior_auc_valid', {}).get('autoencoder', float('nan')):.2f}" for r in rs))
    if a.compare:
        for setup in a.setups:
            now, old = ([r['secs'] for r in rows if r['setup'] == setup and r['before'] == b] for b in (False, True))
            if now and old: print(f"{setup}: wall time now / before = {sum(now) / sum(old):.2f}")


if __name__ == '__main__': main()
