"""One process of a small data-parallel `train_xaaenet` run, for the two-process test (nbs/05_distributed.ipynb) and the
benchmark (bench/run.py). Joins a gloo process group through a file:// rendezvous (no port needed), trains in its own
working directory with a relative `models_dir`, and writes what it saw as JSON.

    python bench/ddp_worker.py --rank R --world W --init FILE --workdir DIR --out RESULT.json [--mode normal|resume|nan|boom|single]
"""
from __future__ import annotations
import argparse, hashlib, json, os, sys, time
from pathlib import Path


def state_hash(model) -> str:
    "SHA-256 of every weight and buffer of `model` (names, then bytes)."
    import torch
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode()); h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def tiny_dls(n_per_class:int=16, size:int=32, bs:int=4):
    "The first `n_per_class` cats and dogs of the bundled sample, at `size` px; a quarter held out."
    from tell_me_why.data import sample_image_files, two_class_dataloaders
    files = sample_image_files()
    cats = [f for f in files if f.name[0].isupper()][:n_per_class]
    dogs = [f for f in files if not f.name[0].isupper()][:n_per_class]
    return two_class_dataloaders(cats + dogs, label='pets', size=size, valid_pct=0.25, seed=0, bs=bs, progress=False)


def tiny_model(seed:int, size:int=32, width:int=4):
    import torch
    from tell_me_why.model_aae import EncoderWithAAEBlocks
    from tell_me_why.model_aae import small_encoder
    torch.manual_seed(seed)
    return EncoderWithAAEBlocks(small_encoder(width=width, n_layers=3), input_size=size, encoding_dims=4)


def sync_share(a, dls, model, n:int=15):
    "Median time of forward + backward of the DDP-wrapped model (autoencoder-phase loss) with and without `no_sync`."
    import statistics, torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    from tell_me_why.model_aae import XAAELoss
    ddp = DistributedDataParallel(model, find_unused_parameters=True)
    model.return_parts = True
    loss_func = XAAELoss(model, recons_weight=0.4, adv_weight=0.6)
    x, y = dls.one_batch()
    x, y = x.as_subclass(torch.Tensor), y.as_subclass(torch.Tensor)
    def step():
        out = ddp(x); loss = loss_func(out, y) + loss_func.disc_loss
        loss.backward(); model.zero_grad(set_to_none=True)
    times = {}
    for name in ('sync', 'no_sync', 'sync', 'no_sync'):
        ts = []
        for _ in range(n):
            dist.barrier(); t0 = time.perf_counter()
            if name == 'sync': step()
            else:
                with ddp.no_sync(): step()
            ts.append(time.perf_counter() - t0)
        times[name] = statistics.median(ts)  # the second round of each (warm) is kept
    Path(a.out).write_text(json.dumps(dict(rank=a.rank, error=None, **times)))
    dist.destroy_process_group()


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument('--rank', type=int, required=True); ap.add_argument('--world', type=int, required=True)
    ap.add_argument('--init', required=True); ap.add_argument('--workdir', required=True); ap.add_argument('--out', required=True)
    ap.add_argument('--mode', default='normal', choices=['normal', 'resume', 'nan', 'boom', 'bench', 'sync'])
    ap.add_argument('--epochs', type=int, nargs=3, default=[2, 2, 2])
    ap.add_argument('--n-per-class', type=int, default=16); ap.add_argument('--size', type=int, default=32)
    ap.add_argument('--bs', type=int, default=4); ap.add_argument('--width', type=int, default=4)
    ap.add_argument('--threads', type=int, default=1)
    a = ap.parse_args(argv)
    import torch
    torch.set_num_threads(a.threads)
    import torch.distributed as dist
    from fastai.callback.core import Callback
    if a.world > 1: dist.init_process_group('gloo', init_method=f'file://{a.init}', rank=a.rank, world_size=a.world)
    from tell_me_why.training import train_xaaenet
    os.makedirs(a.workdir, exist_ok=True); os.chdir(a.workdir)
    res = dict(rank=a.rank, mode=a.mode, phase_hashes=[], error=None)

    class Probe(Callback):
        "Weights after each fit (order 100: after the best weights are loaded and shared); time spent in DDP's backward."
        order = 100
        t_backward = t_batches = 0.
        n_batches = n_items = 0
        def before_batch(self): self.tb = time.perf_counter()
        def before_backward(self): self.t0 = time.perf_counter()
        def after_backward(self): self.t_backward += time.perf_counter() - self.t0
        def after_batch(self):
            if not self.training: return
            self.t_batches += time.perf_counter() - self.tb
            self.n_batches += 1; self.n_items += len(self.learn.yb[0])
        def after_fit(self): res['phase_hashes'].append(state_hash(self.learn.model))

    class Inject(Callback):
        "Rank 1's trouble in the autoencoder phase, second batch: a NaN loss, or an exception."
        order = 10
        def before_fit(self): self.fits = getattr(self, 'fits', 0) + 1
        def after_loss(self):
            if a.rank != 1 or self.fits != 2 or not self.training or self.iter != 1: return
            if a.mode == 'nan': self.learn.loss = self.learn.loss * float('nan')
            if a.mode == 'boom': res['boom_at'] = time.time(); raise RuntimeError('boom on rank 1')

    dls = tiny_dls(a.n_per_class, a.size, a.bs)
    model = tiny_model(100 + a.rank, a.size, a.width)
    import tell_me_why.training as T
    plain_encode, encoded = T._encode, []
    def counting_encode(m, dl):  # images this rank encodes for the prior checks, figures and latent file
        z, y = plain_encode(m, dl); encoded.append(len(z)); return z, y
    T._encode = counting_encode
    if a.mode == 'sync': return sync_share(a, dls, model)  # deliberately different initial weights on each rank
    res['initial_hash'] = state_hash(model)
    probe = Probe()
    start = time.perf_counter()
    try:
        learn = train_xaaenet(model, dls, *a.epochs, grad_accum=1, seed=0, models_dir='models', resume=a.mode == 'resume',
                              save_tsne=a.mode != 'bench', save_pls=a.mode != 'bench', extract_latent=a.mode != 'bench',
                              cbs=[probe, Inject()])
        res.update(phase_logs={p: df.to_dict('list') for p, df in learn.phase_logs.items()}, phase_status=learn.phase_status,
                   prior=learn.prior_reports, optimizer_steps=learn.optimizer_steps, final_hash=state_hash(learn.model))
    except BaseException as e:
        res['error'] = dict(type=type(e).__name__, message=str(e), at=time.time())
    res['seconds'] = time.perf_counter() - start
    res['encoded'] = sum(encoded)
    res.update(backward_s=probe.t_backward, batches_s=probe.t_batches, n_batches=probe.n_batches, n_items=probe.n_items)
    res['files'] = sorted(str(p) for p in Path('.').rglob('*') if p.is_file())
    Path(a.out).write_text(json.dumps(res, indent=1, default=str))
    if a.world > 1 and res['error'] is None: dist.destroy_process_group()


if __name__ == '__main__':
    main()
