"""tell_me_why GPU check (issue 21, part 6): the walkthrough's set-up on a CUDA machine, with mixed precision.

    python bench/gpu_check.py                      # one GPU: a few minutes; two or more GPUs: also the NCCL test
    python bench/gpu_check.py --amp bf16           # bf16 autocast instead of fastai's default fp16
    python bench/gpu_check.py --epochs 2 3 8 --n-per-class 150 --size 300

What it does: writes a planted-cue image set (brightness planted at d = 3 between two classes, 300 px PNGs,
2 x 150 images), builds `two_class_dataloaders` with their defaults (worker processes and pinned memory
as chosen for CUDA), trains `AAE(input_size=300, encoding_dims=128)` (ResNet-34 from ImageNet weights, as the walkthrough) through
all three phases with `train_xaaenet(..., cbs=[MixedPrecision()])`, then scores the cues, ranks them and
reads the verdicts as `tmw-explain` does. It prints images/s of each phase's training batches, each
phase's peak GPU memory, the prior line (codes vs N(0, I)) after each phase, the top cue and the planted
cue's verdict. With two or more GPUs it then runs two processes data-parallel over NCCL (one epoch per
phase) and checks that both end with the same weights.

Exit status: 0 when every check passed, or when there is no CUDA device (it says so: nothing to check);
1 when any check failed (each failure is printed); 2 for bad arguments.
"""
from __future__ import annotations
import argparse, contextlib, hashlib, json, math, os, socket, subprocess, sys, tempfile, time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TIME_BUDGET_S = 600  # the promise: under ten minutes on any CUDA machine

def state_hash(model) -> str:
    "SHA-256 of every weight and buffer (names, then bytes)."
    h = hashlib.sha256()
    for k, v in getattr(model, 'module', model).state_dict().items():
        h.update(k.encode()); h.update(v.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]

def _sync(device):
    import torch
    if device.type == 'cuda': torch.cuda.synchronize(device)

def phase_meter(device):
    "A fastai callback timing each fit's training batches (images/s) and its peak GPU memory; one record per fit."
    import torch
    from fastai.callback.core import Callback
    class PhaseMeter(Callback):
        order = 100
        def __init__(self): self.records = []
        def before_fit(self):
            self.n, self.t = 0, 0.
            if device.type == 'cuda': _sync(device); torch.cuda.reset_peak_memory_stats(device)
        def before_train(self): _sync(device); self.t0 = time.perf_counter()
        def after_batch(self):
            if self.training: self.n += len(self.learn.yb[0])
        def after_train(self): _sync(device); self.t += time.perf_counter() - self.t0
        def after_fit(self):
            peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == 'cuda' else float('nan')
            self.records.append(dict(train_images=self.n, train_batches_s=self.t, images_per_s=self.n / self.t if self.t else float('nan'),
                                     peak_gpu_mb=peak))
    return PhaseMeter()

def amp_callbacks(amp:str) -> list:
    "[MixedPrecision(...)] for 'fp16' (fastai's default) or 'bf16'; [] for 'none'."
    if amp == 'none': return []
    from fastai.callback.fp16 import MixedPrecision
    return [MixedPrecision()] if amp == 'fp16' else [MixedPrecision(amp_mode=amp)]

def make_images(folder:Path, a) -> dict:
    from tell_me_why.fidelity import make_planted_cue_dataset
    t = time.perf_counter()
    info = make_planted_cue_dataset(folder, 'brightness', a.strength, n_per_class=a.n_per_class, size=a.size, seed=a.seed, overwrite=True)
    print(f"Images: 2 x {a.n_per_class} PNGs of {a.size} px, brightness planted at d = {a.strength} "
          f"(measured d = {info['measured_d']:.2f}), written in {time.perf_counter() - t:.0f} s", flush=True)
    return info

def train(folder:Path, work:Path, a, device, epochs, extract_latent=True):
    "Loaders with their defaults, the walkthrough's AAE, the three phases with mixed precision; returns (learn, dls, meter)."
    import torch
    from tell_me_why.data import two_class_dataloaders
    from tell_me_why.model_aae import AAE
    from tell_me_why.training import train_xaaenet
    dls = two_class_dataloaders(folder, label='folder', size=a.size, valid_pct=0.25, seed=a.seed, bs=a.bs, progress=False, device=device)
    torch.manual_seed(a.seed)
    try: model = AAE(input_size=a.size, encoding_dims=a.encoding_dims, pretrained=a.weights == 'imagenet')
    except RuntimeError as e:  # no network: the GPU can still be checked, from random weights
        if 'could not be downloaded' not in str(e): raise
        print(f"Note: {e}\nNote: continuing from random weights (the planted cue may then need more epochs)", flush=True)
        a.weights = 'none'; torch.manual_seed(a.seed)
        model = AAE(input_size=a.size, encoding_dims=a.encoding_dims, pretrained=False)
    meter = phase_meter(device)
    learn = train_xaaenet(model, dls, *epochs, lr_max=a.lr_max, lr_max_factor=3., classif_class_weight=1.0, grad_accum=1,
                          models_dir=work/'models', save_tsne=False, save_pls=False, extract_latent=extract_latent,
                          show_latent_figures=False, seed=a.seed, cbs=amp_callbacks(a.amp) + [meter])
    return learn, dls, meter

def explain(learn, a) -> dict:
    "The cue table, the ranking (permutation test) and the verdicts on the validation images, as `tmw-explain` computes them."
    import numpy as np
    from tell_me_why.training import load_latent
    from tell_me_why.feature_scores import compute_feature_score_table
    from tell_me_why.visualization import run_pls_feature_figures
    from tell_me_why.explanation import gather_evidence
    lat = load_latent(learn.latent_path)
    tr = np.array([s == 'train' for s in lat['split']])
    z_tr, y_tr, z_va, y_va = lat['z'][tr], lat['targets'][tr].numpy(), lat['z'][~tr], lat['targets'][~tr].numpy()
    p_tr, p_va = [p for p, t in zip(lat['paths'], tr) if t], [p for p, t in zip(lat['paths'], tr) if not t]
    vocab = list(learn.dls.vocab); pos = vocab.index('planted')
    table = compute_feature_score_table(p_va, progress=False)
    res = run_pls_feature_figures(z_va, (y_va == pos).astype(float), table, target_label='planted', positive_label='planted',
                                  negative_label='control', save_dir=None, show=False, fit_z=z_tr, fit_target=(y_tr == pos).astype(float),
                                  n_permutations=a.n_permutations, seed=a.seed)
    ranking = res['importance_rank']
    ev = gather_evidence(learn, p_va, z_va, y_va, table, ranking, target_idx=pos, fit_z=z_tr, fit_y=y_tr, save_dir=None,
                         seed=a.seed, progress=False, show=False)
    v = ev['verdicts'].set_index('cue')
    return dict(top_cue=str(ranking.feature.iloc[0]), verdict=str(v.verdict.get('brightness', 'missing')), drives=v.code.get('brightness') == 'drives',
                verdicts=ev['verdicts'][['cue', 'verdict']].head(5).to_dict('records'))

def free_port() -> int:
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def ddp_child(a) -> int:
    "One rank of the two-process NCCL run (started by `ddp_check` with torchrun's environment variables)."
    import torch, torch.distributed as dist
    from tell_me_why.distributed import init_distributed, rank, world_size, local_device
    res = dict(rank=int(os.environ.get('RANK', -1)), error=None)
    try:
        init_distributed()
        from fastai.learner import defaults
        from fastai.callback.progress import ProgressCallback
        defaults.callbacks = [c for c in defaults.callbacks if c is not ProgressCallback]
        res.update(world=world_size(), backend=dist.get_backend(), device=str(local_device()))
        learn, _, meter = train(Path(a.data), Path(a.work), a, local_device(), (1, 1, 1), extract_latent=False)
        res.update(status=learn.phase_status, hash=state_hash(learn.model), phases=meter.records)
    except BaseException as e: res['error'] = f"{type(e).__name__}: {e}"
    Path(a.ddp_child).write_text(json.dumps(res, default=str))
    with contextlib.suppress(Exception):
        if dist.is_initialized(): dist.destroy_process_group()
    return 0 if res['error'] is None else 1

def ddp_check(folder:Path, work:Path, a, fail) -> None:
    "Two processes, one GPU each, data-parallel over NCCL: both finish every phase and end with the same weights."
    port, outs, procs = free_port(), [work/f'ddp_rank{r}.json' for r in (0, 1)], []
    args = ['--weights', a.weights, '--size', str(a.size), '--bs', str(a.bs), '--encoding-dims', str(a.encoding_dims), '--amp', a.amp, '--seed', str(a.seed),
            '--lr-max', str(a.lr_max), '--data', str(folder), '--work', str(work/'ddp')]
    t = time.perf_counter()
    for r in (0, 1):
        env = dict(os.environ, WORLD_SIZE='2', RANK=str(r), LOCAL_RANK=str(r), LOCAL_WORLD_SIZE='2', MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
        procs.append(subprocess.Popen([sys.executable, __file__, '--ddp-child', str(outs[r]), *args], env=env))
    try:
        codes = [p.wait(timeout=a.ddp_timeout) for p in procs]
    except subprocess.TimeoutExpired:
        for p in procs: p.kill()
        return fail(f"NCCL test: the two processes did not finish within {a.ddp_timeout} s (killed)")
    res = [json.loads(o.read_text()) if o.exists() else dict(error=f'no result (exit {c})') for o, c in zip(outs, codes)]
    for r in res:
        if r.get('error'): fail(f"NCCL test, rank {r.get('rank')}: {r['error']}")
    if any(r.get('error') for r in res): return
    print(f"NCCL test: 2 processes ({res[0]['backend']}, {res[0]['device']} and {res[1]['device']}) in {time.perf_counter() - t:.0f} s; "
          + '; '.join(f"rank {r['rank']}: " + ', '.join(f"{x['images_per_s']:.0f} img/s" for x in r['phases']) for r in res), flush=True)
    if res[0].get('backend') != 'nccl': fail(f"NCCL test: backend {res[0].get('backend')!r}, expected 'nccl'")
    if res[0]['hash'] != res[1]['hash']: fail(f"NCCL test: the ranks end with different weights ({res[0]['hash']} vs {res[1]['hash']})")
    for r in res:
        if set(r['status'].values()) != {'trained'}: fail(f"NCCL test, rank {r['rank']}: phases {r['status']}")

def report_phases(learn, meter, fail) -> None:
    "Print images/s, peak GPU memory and the prior line of each phase; fail on an untrained phase, a non-finite loss or no prior report."
    import numpy as np
    from tell_me_why.training import format_prior_report
    trained = [p for p, s in learn.phase_status.items() if s == 'trained']
    for p, m in zip(trained, meter.records):
        rec = learn.records[p]
        print(f"  {p:<12} {m['images_per_s']:8.1f} images/s (training batches: {m['train_images']} images in {m['train_batches_s']:.1f} s; "
              f"phase {rec.get('train_s', float('nan')):.1f} s with validation), peak GPU memory {m['peak_gpu_mb']:.0f} MB")
    for p in ('adversarial', 'autoencoder', 'classifier'):
        if learn.phase_status.get(p) != 'trained': fail(f"phase {p}: {learn.phase_status.get(p, 'not run')}, not trained"); continue
        if learn.records[p].get('diverged'): fail(f"phase {p} diverged: {learn.records[p]['diverged']}")
        log = learn.phase_logs[p].select_dtypes('number').to_numpy(dtype=float)
        if not np.isfinite(log).all(): fail(f"phase {p}: non-finite numbers in its log:\n{learn.phase_logs[p]}")
        r = learn.prior_reports.get(p)
        if r is None: fail(f"phase {p}: no prior report")
        else: print(f"  prior after {p}: {format_prior_report(r)}")
    if len(meter.records) != len(trained): fail(f"{len(meter.records)} fits measured for {len(trained)} trained phases")
    dtypes = {t.dtype for t in getattr(learn.model, 'module', learn.model).parameters()}
    if dtypes != {__import__('torch').float32}: fail(f"the weights are {dtypes} after mixed-precision training, expected float32 only")

def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split('\n\n', 2)[2])
    p.add_argument('--size', type=int, default=300, help="image and model side in pixels (default: 300, the walkthrough's)")
    p.add_argument('--encoding-dims', type=int, default=128, help="size of z (default: 128)")
    p.add_argument('--n-per-class', type=int, default=150, help="generated images per class (default: 150)")
    p.add_argument('--strength', type=float, default=3.0, help="Cohen's d of the planted brightness (default: 3)")
    p.add_argument('--epochs', type=int, nargs=3, default=[2, 3, 8], metavar=('ADV', 'AE', 'CLASSIF'), help="epochs per phase (default: 2 3 8)")
    p.add_argument('--bs', type=int, default=16, help="batch size (default: 16)")
    p.add_argument('--weights', choices=['imagenet', 'none'], default='imagenet', help="encoder start: ImageNet weights as in the "
                   "walkthrough (downloaded once; without a network the check goes on from random weights), or none (random)")
    p.add_argument('--lr-max', type=float, default=1e-3, help="peak learning rate (default: 1e-3; the classifier phase peaks at 3 x)")
    p.add_argument('--amp', choices=['fp16', 'bf16', 'none'], default='fp16', help="mixed precision: fastai's MixedPrecision() (fp16, the "
                   "default), MixedPrecision(amp_mode='bf16'), or none (fp32, for comparison)")
    p.add_argument('--n-permutations', type=int, default=199, help="shuffles of the ranking's permutation test (default: 199)")
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--no-ddp', action='store_true', help="skip the two-process NCCL test even with two or more GPUs")
    p.add_argument('--ddp-timeout', type=int, default=600, help="seconds the NCCL test may take (default: 600)")
    p.add_argument('--work', help="keep images and checkpoints here (default: a temporary folder, removed afterwards)")
    p.add_argument('--cpu-dry-run', action='store_true', help=argparse.SUPPRESS)  # developers: the same flow on the CPU (no GPU numbers)
    p.add_argument('--ddp-child', help=argparse.SUPPRESS)  # internal: one rank of the NCCL test, writes its result here
    p.add_argument('--data', help=argparse.SUPPRESS)       # internal: the image folder of the NCCL test
    a = p.parse_args(argv)
    if a.size < 32 or a.n_per_class < 10 or a.bs < 2 or a.encoding_dims < 2: p.error("--size >= 32, --n-per-class >= 10, --bs >= 2, --encoding-dims >= 2")
    return a

def main(argv=None) -> int:
    a = parse(argv)
    import torch
    if a.ddp_child: return ddp_child(a)
    if not torch.cuda.is_available() and not a.cpu_dry_run:
        print(f"gpu_check: no CUDA device on this machine (torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'}): "
              "nothing to check here. Run it on a machine where `nvidia-smi` lists a GPU.")
        return 0
    device = torch.device('cuda', 0) if torch.cuda.is_available() and not a.cpu_dry_run else torch.device('cpu')
    if device.type == 'cuda':
        torch.cuda.set_device(device)
        n_gpu = torch.cuda.device_count()
        print(f"gpu_check: {n_gpu} GPU(s), using {torch.cuda.get_device_name(device)} (compute capability "
              f"{'.'.join(map(str, torch.cuda.get_device_capability(device)))}, bf16 {'supported' if torch.cuda.is_bf16_supported() else 'not supported'}); "
              f"torch {torch.__version__}, CUDA {torch.version.cuda}; mixed precision: {a.amp}", flush=True)
        if a.amp == 'bf16' and not torch.cuda.is_bf16_supported(): print("gpu_check: --amp bf16 on a GPU without bf16 support", file=sys.stderr); return 1
    else: n_gpu = 0; print(f"gpu_check --cpu-dry-run: the GPU check's flow on the CPU (no GPU figures); mixed precision: {a.amp}", flush=True)
    from fastai.learner import defaults
    from fastai.callback.progress import ProgressCallback
    defaults.callbacks = [c for c in defaults.callbacks if c is not ProgressCallback]  # one line an epoch is enough here
    failures, t0 = [], time.perf_counter()
    def fail(msg): failures.append(msg); print(f"FAILED: {msg}", flush=True)
    with contextlib.ExitStack() as stack:
        work = Path(a.work) if a.work else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix='tmw_gpu_check_')))
        work.mkdir(parents=True, exist_ok=True)
        try:
            make_images(work/'images', a)
            learn, dls, meter = train(work/'images', work, a, device, tuple(a.epochs))
            print(f"Loaders: {len(dls.train.items)} training and {len(dls.valid.items)} validation images, batches of {a.bs}, "
                  f"{dls.train.fake_l.num_workers} worker processes, pinned memory {'on' if dls.train.pin_memory else 'off'}")
            print(f"Training ({' / '.join(map(str, a.epochs))} epochs), per phase:")
            report_phases(learn, meter, fail)
            if device.type == 'cuda': print(f"Peak GPU memory of the whole run: {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MB allocated")
            ex = explain(learn, a)
            print(f"Planted cue: brightness. Top cue of the ranking: {ex['top_cue']}; verdict on brightness: {ex['verdict']}")
            print("  verdicts: " + '; '.join(f"{v['cue']}: {v['verdict']}" for v in ex['verdicts']))
            if ex['top_cue'] != 'brightness': fail(f"the ranking puts {ex['top_cue']!r} first, not the planted brightness")
            if not ex['drives']:
                fail(f"the planted brightness is read as {ex['verdict']!r}, not 'drives the decision' (more epochs, --epochs, may be needed)")
        except Exception as e:
            import traceback; traceback.print_exc()
            fail(f"{type(e).__name__}: {e}")
        if not failures and n_gpu >= 2 and not a.no_ddp: ddp_check(work/'images', work, a, fail)
        elif n_gpu < 2 and device.type == 'cuda': print("NCCL test: skipped (one GPU)")
    took = time.perf_counter() - t0
    print(f"Took {took:.0f} s" + (f" (more than the {TIME_BUDGET_S} s this check should take)" if took > TIME_BUDGET_S else ''))
    print(f"gpu_check: {'FAILED (' + str(len(failures)) + ' problem(s) above)' if failures else 'all checks passed'}")
    return 1 if failures else 0

if __name__ == '__main__':
    sys.exit(main())
