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


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--size', type=int, nargs='*', default=[48, 96])
    ap.add_argument('--arch', nargs='*', default=['small', 'resnet18'])
    ap.add_argument('--images', type=int, default=128)
    ap.add_argument('--repeats', type=int, default=3)
    a = ap.parse_args()
    print(f"{'arch':9s} {'size':>4s} {'n':>4s} {'encode pass':>12s} {'encode only':>12s} {'interventions':>14s} {'÷ pass':>7s} {'÷ encode':>9s}")
    for arch in a.arch:
        for size in a.size:
            r = run(size, arch, a.images, a.repeats)
            print(f"{arch:9s} {size:4d} {r['n']:4d} {r['encode_pass_s']:11.3f}s {r['encode_tensors_s']:11.3f}s "
                  f"{r['interventions_s']:13.2f}s {r['ratio_pass']:6.0f}x {r['ratio_net']:8.0f}x", flush=True)
