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
    from tell_me_why.fidelity import make_planted_cue_dataset
    from tell_me_why.model_aae import small_xaaenet
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
# Known answers (issue 22, part 5): `python bench/interventions.py --known-answers [--seeds 10] [--jobs 2]`. The run
# (`known_answer_run`, with its `on_trained` hook) lives in bench/fidelity.py; these names stay importable from here.
# ---------------------------------------------------------------------------------------------------------------

import sys as _sys
_sys.path.insert(0, str(Path(__file__).parent))
from fidelity import known_answer_run, known_answers, counterfactual_numbers, _decoy_items  # noqa: E402,F401


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
