"""tell_me_why benchmarks: speed and memory figures measured as ratios within one run.

    python bench/run.py            # full sizes (several minutes on 2 CPU cores)
    python bench/run.py --quick    # smaller sizes, same figures, for CI-style smoke runs
    python bench/run.py --only masking,train_step

Absolute times drift on a shared machine; ratios of two timings taken side by side hold better.
Each row prints what was measured and the target; the script exits 1 if a target is missed.
"""
import argparse, gc, os, platform, resource, sys, time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
SHARED_PETS = Path(__file__).resolve().parents[2]/'shared'/'data'/'pets_sample'/'images'

def timeit(fn, repeats=5, warmup=1):
    "Median wall time of `fn()` in seconds."
    for _ in range(warmup): fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter(); fn(); ts.append(time.perf_counter() - t0)
    return float(np.median(ts))

def rss_mb():
    "Current resident set size in MB (Linux)."
    with open('/proc/self/statm') as f: return int(f.read().split()[1])*os.sysconf('SC_PAGE_SIZE')/2**20

def peak_rss_mb(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024

def _aae(size, arch='resnet34', dims=128):
    from tell_me_why.model_aae import AAE
    from fastai.vision.all import resnet18, resnet34
    torch.manual_seed(0)
    return AAE(input_size=size, encoding_dims=dims, arch={'resnet18': resnet18, 'resnet34': resnet34}[arch], pretrained=False)

def _step_fn(model, loss_func, x, y, opt):
    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_func(model(x), y)
        loss.backward(); opt.step()
    return step

def bench_masking(quick):
    from tell_me_why.callbacks import RandomMasking
    x = torch.rand(16, 3, 160, 160)
    m = RandomMasking(0.3, 16)
    t_mask, t_clone = timeit(lambda: m(x), 50), timeit(lambda: x.clone(), 50)
    r = t_mask/t_clone
    return [('RandomMasking ÷ x.clone() (16,3,160,160)', f'{r:.2f}x ({t_mask*1e3:.2f} ms vs {t_clone*1e3:.2f} ms)', '≤ 5x', r <= 5)]

def _game_step_fn(model, loss_func, x, y, gen_opt, disc_opt):
    "One optimiser step as `AdversarialGame` makes it: D's loss joins the backward, each player has its own Adam."
    def step():
        gen_opt.zero_grad(set_to_none=True); disc_opt.zero_grad(set_to_none=True)
        loss = loss_func(model(x), y)
        if loss_func.disc_loss is not None and model.gen_train: loss = loss + loss_func.disc_loss
        loss.backward()
        if model.gen_train: gen_opt.step()
        disc_opt.step()
    return step

def bench_train_step(quick):
    from tell_me_why.model_aae import XAAELoss
    from tell_me_why.callbacks import xaae_splitter, is_critic_param
    from torchvision.models import resnet34
    size, bs = (128, 4) if quick else (192, 8)
    x, y = torch.rand(bs, 3, size, size), torch.randint(0, 2, (bs,))
    model = _aae(size)
    model.return_parts = True
    gen_opt = torch.optim.Adam(xaae_splitter(model)[0], 1e-4)
    disc_opt = torch.optim.Adam([p for n, p in model.named_parameters() if is_critic_param(n)], 1e-2, betas=(0.5, 0.99))
    classif = XAAELoss(model, recons_weight=0.599, adv_weight=0.4, classif_weight=0.001)
    t_aae = timeit(_game_step_fn(model, classif, x, y, gen_opt, disc_opt), 3 if quick else 5)
    # Phase 1 as train_xaaenet runs it: encode-only; discriminator-only epochs (the generator's step is skipped)
    # and epochs where both players step, half and half in its first six epochs.
    model.run_decoder = False
    adv, t_adv = XAAELoss(model, adv_weight=1.), 0.
    for gen_train in (False, True):
        model.gen_train = gen_train
        t_adv += timeit(_game_step_fn(model, adv, x, y, gen_opt, disc_opt), 3 if quick else 5)/2
    model.gen_train, model.run_decoder, model.return_parts = True, True, False
    plain = resnet34(num_classes=2)
    popt = torch.optim.Adam(plain.parameters(), 1e-4)
    t_plain = timeit(_step_fn(plain, F.cross_entropy, x, y, popt), 3 if quick else 5)
    r1, r2 = t_aae/t_plain, t_adv/t_aae
    return [(f'AAE classifier-phase step ÷ resnet34 CE step (bs {bs}, {size} px)', f'{r1:.2f}x ({t_aae:.3f} s vs {t_plain:.3f} s)', '≤ 4x', r1 <= 4),
            ('adversarial-phase step (mean of discriminator-only and both-player steps) ÷ classifier-phase step', f'{r2:.2f}x ({t_adv:.3f} s)', '≤ 0.5x', r2 <= 0.5)]

def bench_latent(quick):
    # What an encode-only path can reach is the cost of the encoder itself: extracting codes runs the encoder body
    # plus one Linear layer (flatten -> z), and no decoder or discriminator. So the target is codes extraction ÷ an
    # encoder-only forward close to 1. Dividing by a full forward instead (the old row) asked for a saving the model
    # cannot give: the decoder, the only part extraction skips, is about a quarter of a full forward.
    n, size = (64, 128) if quick else (256, 160)
    model = _aae(size).eval()
    x = torch.rand(n, 3, size, size)
    with torch.no_grad(): z = torch.cat([model.encode(x[i:i+32]) for i in range(0, n, 32)])
    def run(f, inp):
        with torch.no_grad():
            for i in range(0, n, 32): f(inp[i:i+32])
    fns = dict(enc=lambda: run(model.encode, x),     # codes extraction: the library's encode-only path
               body=lambda: run(model.encoder, x),   # encoder-only forward: the convolutional body alone
               fwd=lambda: run(model, x),            # full forward: encoder, heads and decoder
               dec=lambda: run(model.decode, z))     # decoder alone, from the codes
    # interleaved rounds, so that a change in the machine's load hits all four timings alike
    for f in fns.values(): f()
    ts = {k: [] for k in fns}
    for _ in range(3):
        for k, f in fns.items():
            t0 = time.perf_counter(); f(); ts[k].append(time.perf_counter() - t0)
    t_enc, t_body, t_fwd, t_dec = (float(np.median(ts[k])) for k in ('enc', 'body', 'fwd', 'dec'))
    r = t_enc/t_body
    return [(f'latent extraction (encode) ÷ encoder-only forward, {n} images {size} px', f'{r:.2f}x ({t_enc:.2f} s vs {t_body:.2f} s)', '≤ 1.1x', r <= 1.1),
            (f'latent extraction (encode) ÷ full forward, same images', f'{t_enc/t_fwd:.2f}x ({t_fwd:.2f} s)', 'report', True),
            (f'decoder alone (decode z) ÷ full forward, same images', f'{t_dec/t_fwd:.2f}x ({t_dec:.2f} s)', 'report', True)]

def bench_memory(quick):
    from tell_me_why.model_aae import XAAELoss
    size, bs, steps = 160, 16, (8 if quick else 20)
    model = _aae(size)
    opt = torch.optim.Adam(model.parameters(), 1e-4)
    loss = XAAELoss(model, recons_weight=0.599, adv_weight=0.4, classif_weight=0.001)
    x, y = torch.rand(bs, 3, size, size), torch.randint(0, 2, (bs,))
    step, rss = _step_fn(model, loss, x, y, opt), []
    for _ in range(steps): step(); gc.collect(); rss.append(rss_mb())
    growth = rss[-1] - rss[2]
    return [(f'peak RSS, classifier-phase steps (bs {bs}, {size} px)', f'{peak_rss_mb():.0f} MB peak', 'report', True),
            (f'RSS growth from step 3 to step {steps}', f'{growth:+.0f} MB', '≤ +50 MB', growth <= 50)]

def bench_features(quick):
    from features import bench_feature_table, bench_feature_parallel
    paths = sorted(SHARED_PETS.glob('*.jpg'))
    paths = (paths*2)[:200] if not quick else paths[:60]
    t = bench_feature_table(paths, repeats=1 if quick else 3)
    p = bench_feature_parallel(paths)
    return [(f'feature table ÷ decode only ({len(paths)} JPEGs)', f"{t['ratio']:.2f}x", '≤ 3x', t['ratio'] <= 3),
            ('feature table, all cores vs one core', f"{p['speedup']:.2f}x speed-up", 'report', True)]

def bench_tsne_row(quick):
    from figures import bench_tsne
    r = bench_tsne(n=1000 if quick else 5000)
    ok = r['ratio'] <= 0.7 and abs(r['trust_figure'] - r['trust_default']) <= 0.02
    return [(f"save_latent_tsne_figure ÷ sklearn TSNE default ({r['n']}×{r['d']})",
             f"{r['ratio']:.2f}x, trustworthiness {r['trust_figure']:.3f} vs {r['trust_default']:.3f}", '≤ 0.7x, Δtrust ≤ 0.02', ok)]

def bench_end_to_end(quick):
    import tempfile, contextlib, io
    from tell_me_why.data import two_class_dataloaders
    from tell_me_why.training import train_xaaenet
    size = 96 if quick else 160
    dls = two_class_dataloaders(SHARED_PETS, label='pets', size=size, bs=16, seed=0)
    model = _aae(size)
    with tempfile.TemporaryDirectory() as d, contextlib.redirect_stdout(io.StringIO()):
        t0 = time.perf_counter()
        learn = train_xaaenet(model, dls, epochs_adv=1, epochs_ae=1, epochs_classif=1, models_dir=d, show_latent_figures=False, seed=0)
        total = time.perf_counter() - t0
    t = learn.phase_timings
    p3_train, p3_post = t['classifier']['train_s'], t['classifier']['figures_and_latent_s']
    detail = ', '.join(f"{k} {v.get('train_s', 0):.0f}+{v.get('figure_s', v.get('figures_and_latent_s', 0)):.0f} s" for k, v in t.items())
    return [(f'train_xaaenet 1/1/1 epochs, shared pets, {size} px', f'{total:.0f} s total ({detail}; train+figures)', 'report', True),
            ('phase 3: latent extraction + PLS figure ÷ training', f'{p3_post/p3_train:.2f}x', '≤ 1x', p3_post <= p3_train)]

def bench_fidelity_rows(quick):
    from fidelity import bench_fidelity
    return bench_fidelity(quick=quick)

def bench_data_parallel(quick):
    "Training throughput with 2 processes (gloo, file:// rendezvous) ÷ 1 process, and the share of a step spent syncing."
    import json, subprocess, tempfile
    worker = Path(__file__).parent/'ddp_worker.py'
    args = ['--epochs', '1', '2', '2', '--n-per-class', '40' if quick else '80', '--size', '64',
            '--bs', '8', '--width', '16']
    def run(world, mode='bench', threads=1):
        with tempfile.TemporaryDirectory() as d:
            d = Path(d)
            procs = [subprocess.Popen([sys.executable, str(worker), '--rank', str(r), '--world', str(world), '--init', str(d/'pg'),
                                       '--workdir', str(d/f'rank{r}'), '--out', str(d/f'{r}.json'), *args, '--mode', mode,
                                       '--threads', str(threads)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                     for r in range(world)]
            for p in procs: p.wait(timeout=1800)
            res = [json.loads((d/f'{r}.json').read_text()) for r in range(world)]
        if any(r['error'] for r in res): raise RuntimeError(f"data-parallel benchmark run failed: {[r['error'] for r in res]}")
        return res
    cores = os.cpu_count() or 1
    one = run(1, threads=cores)[0]                                      # one process using every core
    two = run(2, threads=max(1, cores // 2))                            # two processes sharing them
    tput1 = one['n_items'] / one['batches_s']                           # images a second, training batches only
    tput2 = sum(r['n_items'] for r in two) / max(r['batches_s'] for r in two)
    sync = run(2, 'sync', threads=max(1, cores // 2))
    t_sync, t_local = max(r['sync'] for r in sync), max(r['no_sync'] for r in sync)
    share = max(0., t_sync - t_local) / t_sync
    return [(f'data-parallel training throughput, 2 processes ({max(1, cores // 2)} thread each) ÷ 1 process ({cores} threads), gloo',
             f'{tput2 / tput1:.2f}x ({tput2:.0f} vs {tput1:.0f} images/s, per-process batch of 8)', f'for the record (about 1 on {cores} cores)', True),
            ('share of a 2-process forward+backward spent in gradient synchronisation (DDP step vs the same step under no_sync)',
             f'{share:.0%} ({t_sync*1e3:.1f} ms vs {t_local*1e3:.1f} ms)', 'for the record', True)]

BENCHES = dict(masking=bench_masking, train_step=bench_train_step, latent=bench_latent, memory=bench_memory,
               features=bench_features, tsne=bench_tsne_row, end_to_end=bench_end_to_end, fidelity=bench_fidelity_rows,
               data_parallel=bench_data_parallel)

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--quick', action='store_true', help='smaller sizes for a fast smoke run')
    ap.add_argument('--only', default='', help=f"comma-separated subset of: {','.join(BENCHES)}")
    args = ap.parse_args()
    names = [n for n in args.only.split(',') if n] or list(BENCHES)
    unknown = set(names) - set(BENCHES)
    if unknown: ap.error(f"unknown benchmark(s) {sorted(unknown)}; choose from {list(BENCHES)}")
    print(f"# tell_me_why benchmarks — {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, {'quick' if args.quick else 'full'} mode\n")
    rows = []
    for n in names:
        t0 = time.perf_counter()
        new = BENCHES[n](args.quick)
        rows += new
        for r in new: print(f"{'ok  ' if r[3] else 'MISS'} {r[0]}: {r[1]} (target {r[2]})", flush=True)
        print(f"     [{n}: {time.perf_counter()-t0:.0f} s]", flush=True)
    print('\n| figure | measured | target | |\n|---|---|---|---|')
    for r in rows: print(f'| {r[0]} | {r[1]} | {r[2]} | {"ok" if r[3] else "**missed**"} |')
    missed = [r[0] for r in rows if not r[3]]
    if missed: print(f"\n{len(missed)} target(s) missed: {missed}"); sys.exit(1)

if __name__ == '__main__': main()
