"""Head-to-head on known answers (issue 30): our cue verdicts beside Captum's TCAV on the same trained models.

Set-up. For each planted cue of `tell_me_why.fidelity` (brightness, redness, symmetry, centre texture, high
frequency) and each seed, the known-answer model is trained by `bench/fidelity.py`'s `known_answer_run` (the same run
as `bench/fidelity.py --known-answers`; d = 2, 48 px, 100 images per class, 40 % held out, `small_xaaenet`, epochs
1/4/12; its validation-only decoy included). Its `on_trained` hook hands this script the trained `Learner`, its
verdicts and the decoy images while the run's images still exist. A plain fastai ResNet-18 (`plain_resnet18` of
`bench/fidelity.py`: torchvision `resnet18(weights=None)`, from scratch, no downloads) is then trained on the same
DataLoaders (same images, same split) and gets a decoy of its own, made
by the same `_decoy_items`. Every model is read three ways:

* ours: the verdicts of `cue_interventions` on the validation images (the xAAEnet's are those of the known-answer
  run itself). A concept is "called" when its verdict is "drives the decision"; the decoy is called when the decoy
  cue's verdict on the decoy images is "drives the decision".
* TCAV (`captum.concept.TCAV`, its default CAV classifier and layer gradients): one concept per planted-cue
  feature, made with our own edits (`calibrate_edit`: `--concept-size` probe images with the feature raised by
  `STRENGTH` SD) against `--random-sets` sets of unedited probe images, plus one more random set as the null
  "concept"; TCAV scores (sign counts) of the planted class's logit on the planted class's validation images. The
  TCAV paper's test: a two-sided t-test of the concept's scores against the null's over the random sets, p < 0.05
  (the count under Bonferroni over the five concepts and two layers is printed too). A significant concept is
  called in the direction of its mean score (above 0.5: raising the concept raises the class logit). The layers:
  ResNet-18 layer3 and layer4; the xAAEnet's encoder blocks 3 and 4 (its last two conv blocks). The decoy is
  called when the decoy concept is significant on the decoy images. Captum's own CAV accuracies are not used (for
  a two-concept set its classifier predicts one class only, so they read about 0.5); separability of a concept
  from random images is measured here instead (5-fold logistic regression on the layer's activations).
* the known answer, measured directly: `cue_interventions` on `PROBE_PER_CLASS` x 2 fresh images of the same
  planted-cue generator (another seed; never seen by the model nor used by the verdicts), one dose of +`STRENGTH`
  SD of each feature (the same edit as the concept sets): the paired change of s = logit(planted) - logit(control)
  per image, with a bootstrap 95 % interval. A concept "moves s" when the interval excludes 0, and "does nothing"
  when the whole interval lies within +-`NULL_MARGIN` SD of s per SD of the feature (a +2 SD edit moving s by less
  than 0.2 SD); otherwise it is left out of the counts.

Per model (xAAEnet, ResNet-18) and method, one table: planted-cue recall (called, in the planted direction) among
the models that beat chance (`cue_interventions`' binomial gate on the validation images), false positives (calls
on concepts that do nothing; with Bonferroni for TCAV), decoy calls, wrong directions (calls whose sign disagrees
with the direct measurement where that is definite), the median separability of TCAV's false positives, and the
median wall seconds per model (ours: `cue_interventions` on the validation and decoy images, all eleven cues;
TCAV: concept images, activations, CAVs and scores for five concepts at two layers, and the decoy pass).

A task is an entry of `TASKS` (units to run, a function running one unit into per-model records). Two tasks:

* `planted` (above).
* `tag`: the planted tag on real photos of `bench/fidelity.py --tag` (`tag_known_answer_run`: the bundled pets photos
  at 64 px in two classes drawn at random, a red 8-px tag in the top-right corner of 95 % of `tagged`; the small
  xAAEnet and the plain ResNet-18 on one split; ours = `cue_interventions` with the built-in cues and
  `patch_cue('red_tag', tag, box=box)`). Its `on_trained` hook hands each model to `judge_tag`: Grad-CAM
  (pytorch-grad-cam's `GradCAM`, as that library scales the maps, each validation image's own class, at the same two
  layers as TCAV): the share of the map's mass inside the tag's box (the top-right quarter) and inside the tag's own
  square, and the share of maps peaking in the box, for the tagged images that carry the tag and for the plain
  images, beside each box's share of the image area; TCAV with the tag as the concept (the cue's own edit pasting the
  tag into tag-free training images, `min(--concept-size, 20)` per set, against `--random-sets` random sets of
  tag-free training images; scored on the tagged validation images). The tag table counts, among the models that
  beat chance: ours calling the tag a driver; Grad-CAM maps of the tagged images putting more mass in the box than
  its area share and than the plain images' maps; TCAV's tag concept significant in the right direction.

Needs the optional extra: `pip install -e ".[peers]"` (captum, grad-cam). Run with one torch thread per job:

    OMP_NUM_THREADS=1 python bench/peers.py --quick                      # 2 cues x 2 seeds (about 6 min here)
    OMP_NUM_THREADS=1 python bench/peers.py --seeds 5 --jobs 1 --save peers.pkl   # 5 cues x 5 seeds (about 35 min)
    OMP_NUM_THREADS=1 python bench/peers.py --tasks tag --seeds 5 --save tag.pkl  # the planted-tag task, 5 seeds
    OMP_NUM_THREADS=1 python bench/peers.py --tasks tag --quick          # 2 seeds, shorter training
    python bench/peers.py --load peers.pkl                               # print a saved run again
"""
from __future__ import annotations

import argparse, math, pickle, random, sys, tempfile, time, warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

BENCH = Path(__file__).resolve().parent
STRENGTH = 2.0         # the concept edit: the feature raised by this many SD (the planted sets' d)
NULL_MARGIN = 0.1      # "does nothing": the 95 % interval of the effect (SD of s per SD of the feature) within +-this
ALPHA = 0.05           # TCAV paper's t-test level
PROBE_PER_CLASS = 100  # fresh images per class for the concept sets, the random sets and the direct measurement
QUICK_CUES = ['brightness', 'symmetry']


def _bench(name:str):
    "A sibling script of bench/ as a module (bench/ is not a package)."
    if str(BENCH) not in sys.path: sys.path.insert(0, str(BENCH))
    return __import__(name)


def peers_available() -> str|None:
    "None when the optional extra is installed, else the reason it is not usable."
    for module, package in (('captum.concept', 'captum'), ('pytorch_grad_cam', 'grad-cam')):
        try: __import__(module)
        except ImportError as e: return f"{package} is not installed ({e}); install the extra: pip install -e \".[peers]\""
    return None


class DecisionOutput(torch.nn.Module):
    "Images -> the model's two logits (`score=True`: column t holds logit[t] - logit[other], the decision score)."
    def __init__(self, model:torch.nn.Module, score:bool=False):
        super().__init__()
        self.net, self.score = model, score
    def forward(self, x):
        from tell_me_why.model_aae import XAAEBase
        out = self.net.classifier(self.net.encode(x)) if isinstance(self.net, XAAEBase) else self.net(x)
        out = out.as_subclass(torch.Tensor) if isinstance(out, torch.Tensor) else out
        return out - out.flip(1) if self.score else out


def model_layers(model:torch.nn.Module) -> dict[str, str]:
    "Names (inside `DecisionOutput`) of the two layers TCAV reads: an xAAEnet's last two encoder blocks, a fastai ResNet's layer3/4."
    from tell_me_why.model_aae import XAAEBase
    if isinstance(model, XAAEBase):
        n = len(model.encoder)
        return {f'encoder block {n - 1}': f'net.encoder.{n - 2}', f'encoder block {n}': f'net.encoder.{n - 1}'}
    body = model[0]
    return {'layer3': 'net.0.6', 'layer4': 'net.0.7'} if len(body) == 8 else {}


# ---------------------------------------------------------------------------------------------------------------
# Concept sets, the direct measurement, TCAV
# ---------------------------------------------------------------------------------------------------------------

def images_of(dls, items) -> tuple[torch.Tensor, torch.Tensor, Callable]:
    "Images in [0, 1] as the model receives them, their labels, and the map to model input."
    from tell_me_why.interventions import model_image_batches
    batches, to_model, _ = model_image_batches(dls, items, 64)
    xs, ys = zip(*batches)
    return torch.cat(xs), torch.cat(ys), to_model


def concept_sets(x:torch.Tensor, features:list, n:int, n_random:int, strength:float=STRENGTH, seed:int=0) -> tuple[dict, list]:
    """Concepts: for each feature, `n` images of `x` with the feature raised by `strength` SD of it over `x` (`calibrate_edit`);
    random sets: `n_random + 1` sets of `n` unedited images of `x` (the first is the null concept of the t-test)."""
    from tell_me_why.interventions import calibrate_edit, cue_values
    g = torch.Generator().manual_seed(seed)
    sd = {f: float(v.std()) for f, v in cue_values(x, features).items()}
    pick = lambda: x[torch.randperm(len(x), generator=g)[:n]]
    concepts = {f: calibrate_edit(pick(), f, strength * sd[f])[0] for f in features}
    return concepts, [pick() for _ in range(n_random + 1)]


def direct_effects(learn, items, dls, features:list, strength:float=STRENGTH, margin:float=NULL_MARGIN, seed:int=0):
    """The known answer of each concept, measured: `cue_interventions` with one dose (+`strength` SD) on `items`; per feature
    the effect (SD of s per SD of the feature), its 95 % interval, and `state`: +1 / -1 (moves s), 0 (does nothing: the
    interval within +-`margin`), None (neither)."""
    from tell_me_why.interventions import cue_interventions
    res = cue_interventions(learn, items=items, dls=dls, cues=features, doses=(strength,), train_items=None, n_off_target=0,
                            progress=False, seed=seed).set_index('cue')
    out = {}
    for f in features:
        e, lo, hi = (float(res.loc[f, k]) for k in ('effect', 'ci_low', 'ci_high'))
        state = 1 if lo > 0 else -1 if hi < 0 else 0 if (-margin < lo and hi < margin) else None
        gap = res.attrs['s_class_gap']
        out[f] = dict(effect=e, ci=(lo, hi), state=state,
                      share=strength * e / gap if gap and np.isfinite(gap) else math.nan)
    return out, dict(accuracy=res.attrs['accuracy'], beats_chance=res.attrs['beats_chance'], seconds=res.attrs['seconds'])


def _activations(module, layer_name:str, x:torch.Tensor) -> np.ndarray:
    store = {}
    layer = dict(module.named_modules())[layer_name]
    h = layer.register_forward_hook(lambda m, i, o: store.__setitem__('a', o.detach().flatten(1)))
    try:
        with torch.no_grad(): module(x)
    finally: h.remove()
    return store['a'].float().numpy()


def separability(module, layer_name:str, a:torch.Tensor, b:torch.Tensor, seed:int=0) -> float:
    "5-fold cross-validated accuracy of a logistic regression telling `a`'s activations at the layer from `b`'s (0.5 = not separable)."
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    X = np.concatenate([_activations(module, layer_name, a), _activations(module, layer_name, b)])
    y = np.r_[np.ones(len(a)), np.zeros(len(b))]
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    return float(cross_val_score(clf, X, y, cv=StratifiedKFold(5, shuffle=True, random_state=seed)).mean())


def tcav_test(module, layers:dict, inputs:torch.Tensor, concepts:dict, randoms:list, target:int, workdir, seed:int=0,
              alpha:float=ALPHA, only:list|None=None) -> dict:
    """TCAV scores (sign counts) of each concept against each random set (`randoms[1:]`) and of the null concept (`randoms[0]`)
    against the same sets, per layer, and the two-sided t-test between them. `only`: concepts to score (default all).
    -> {(concept, layer label): dict(scores, null, p, mean, significant, direction)}."""
    from scipy import stats
    from captum.concept import TCAV, Concept
    names = list(concepts) if only is None else list(only)
    cs = [Concept(i, f'c{i}', [concepts[f]]) for i, f in enumerate(concepts)]
    rs = [Concept(len(cs) + j, f'random{j}', [r]) for j, r in enumerate(randoms)]
    use = [c for c, f in zip(cs, concepts) if f in names]
    sets = [[c, r] for c in use + [rs[0]] for r in rs[1:]]
    random.seed(seed); np.random.seed(seed)  # Captum's CAV classifier: split by `random`, SGD seeded by numpy
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        tcav = TCAV(module, list(layers.values()), model_id='m', save_path=str(workdir))
        scores = tcav.interpret(inputs, sets, target=target)
    score_of = lambda c, layer: [float(scores[f'{c.id}-{r.id}'][layer]['sign_count'][0]) for r in rs[1:]]
    out = {}
    for label, layer in layers.items():
        null = score_of(rs[0], layer)
        for c, f in zip(cs, concepts):
            if f not in names: continue
            s = score_of(c, layer)
            p = float(stats.ttest_ind(s, null).pvalue) if np.std(s) + np.std(null) > 0 else (0. if np.mean(s) != np.mean(null) else 1.)
            p = 1. if not np.isfinite(p) else p
            out[f, label] = dict(scores=s, null=null, p=p, mean=float(np.mean(s)), significant=p < alpha,
                                 direction=1 if np.mean(s) > 0.5 else -1 if np.mean(s) < 0.5 else 0)
    return out


# ---------------------------------------------------------------------------------------------------------------
# One trained model, read three ways
# ---------------------------------------------------------------------------------------------------------------

def _ours_calls(verdicts, features:list) -> dict:
    "{feature: sign of its effect} for the features `cue_interventions` calls 'drives the decision'."
    v = verdicts.set_index('cue')
    return {f: int(np.sign(v.effect[f])) for f in features if f in v.index and v.code[f] == 'drives'}


def judge_model(kind:str, learn, verdicts, decoy_verdicts, decoy:dict, probe:dict, cfg:dict, workdir:Path) -> dict:
    "Ours, TCAV and the direct measurement on one trained model; `probe` holds the probe images, concept and random sets."
    features, t_idx = probe['features'], list(learn.dls.vocab).index('planted')
    module = DecisionOutput(learn.model, score=cfg['tcav_output'] == 'score').eval()
    layers = model_layers(learn.model)
    direct, probe_gate = direct_effects(learn, probe['items'], learn.dls, features, seed=cfg['seed'])
    # TCAV: inputs are the planted class's validation images (and, for the decoy, its decoy images)
    xv, yv, to_model = images_of(learn.dls, list(learn.dls.valid.items))
    xd, yd, _ = images_of(learn.dls, decoy['items'])
    t0 = time.perf_counter()
    concepts, randoms = concept_sets(probe['x'], features, cfg['concept_size'], cfg['random_sets'], seed=cfg['seed'])
    concepts, randoms = {f: to_model(c) for f, c in concepts.items()}, [to_model(r) for r in randoms]
    tc = tcav_test(module, layers, to_model(xv[yv == t_idx]), concepts, randoms, t_idx, workdir/f'cav_{kind}', cfg['seed'])
    tcd = tcav_test(module, layers, to_model(xd[yd == t_idx]), concepts, randoms, t_idx, workdir/f'cav_{kind}', cfg['seed'],
                    only=[decoy['cue']])
    tcav_s = time.perf_counter() - t0
    bonf = ALPHA / (len(features) * len(layers))
    sep = {(f, lab): separability(module, layers[lab], concepts[f], randoms[1], cfg['seed'])
           for (f, lab), r in tc.items() if r['significant']}
    methods = {'ours': dict(calls=_ours_calls(verdicts, features), calls_bonf=None,
                            decoy_call=decoy_verdicts.set_index('cue').code[decoy['cue']] == 'drives',
                            seconds=verdicts.attrs['seconds'] + decoy_verdicts.attrs['seconds'],
                            drivers_all=list(verdicts.cue[verdicts.code == 'drives']))}
    for lab in layers:
        calls = {f: tc[f, lab]['direction'] for f in features if tc[f, lab]['significant']}
        methods[f'TCAV {lab}'] = dict(calls=calls, calls_bonf={f: s for f, s in calls.items() if tc[f, lab]['p'] < bonf},
                                      decoy_call=bool(tcd[decoy['cue'], lab]['significant']), seconds=tcav_s,
                                      separability={f: sep[f, lab] for f in calls},
                                      scores={f: (tc[f, lab]['mean'], tc[f, lab]['p']) for f in features})
    return dict(model=kind, accuracy=verdicts.attrs['accuracy'], beats_chance=bool(verdicts.attrs['beats_chance']),
                probe_accuracy=probe_gate['accuracy'], direct=direct, decoy_cue=decoy['cue'], methods=methods)


# ---------------------------------------------------------------------------------------------------------------
# Tasks: a task lists its units and runs one into per-model records
# ---------------------------------------------------------------------------------------------------------------

def planted_unit(cue:str, seed:int, cfg:dict) -> list[dict]:
    "One planted cue and seed: the known-answer xAAEnet and a plain ResNet-18 on the same images, each judged three ways."
    torch.set_num_threads(1)
    from tell_me_why.fidelity import make_planted_cue_dataset, PLANTED_CUES
    from tell_me_why.interventions import cue_interventions
    fid = _bench('fidelity')
    features, cfg = list(PLANTED_CUES.values()), dict(cfg, seed=seed)
    def on_trained(learn, verdicts, decoy_verdicts, decoy):
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            info = make_planted_cue_dataset(tmp/'probe', cue, STRENGTH, n_per_class=cfg['probe_per_class'], size=cfg['size'],
                                            seed=seed + 1000)
            probe = dict(items=info['paths'], features=features, x=images_of(learn.dls, info['paths'])[0])
            records = [judge_model('xAAEnet', learn, verdicts, decoy_verdicts, decoy, probe, cfg, tmp)]
            t1 = time.perf_counter()
            rlearn = fid.plain_resnet18(learn.dls, seed, cfg['resnet_epochs'])
            train_s = time.perf_counter() - t1
            r_verdicts = cue_interventions(rlearn, progress=False)
            direction = 1. if r_verdicts.set_index('cue').effect[decoy['cue']] >= 0 else -1.
            r_items = fid._decoy_items(list(learn.dls.valid.items), tmp/'decoy_resnet', decoy['cue'], direction)
            r_decoy = cue_interventions(rlearn, items=r_items, progress=False)
            records.append(judge_model('ResNet-18', rlearn, r_verdicts, r_decoy, dict(decoy, direction=direction, items=r_items),
                                       probe, cfg, tmp))
            records[-1]['train_seconds'] = train_s
        for r in records: r.update(planted=PLANTED_CUES[cue], direction=1 if info['direction'] == 'higher' else -1)
        records[0]['judge_seconds'] = time.perf_counter() - t0
        return records
    ka = fid.known_answer_run(cue, seed, size=cfg['size'], n_per_class=cfg['per_class'], epochs=tuple(cfg['epochs']),
                              on_trained=on_trained)
    records = ka['extra']
    for r in records: r.update(task='planted', cue=cue, seed=seed)
    records[0]['known_answer'] = {k: ka[k] for k in ('found', 'drivers', 'decoy_verdict', 'planted_effect', 'accuracy', 'seconds')}
    return records


# ---------------------------------------------------------------------------------------------------------------
# The planted-tag task: real photos, a tag in one class; ours, Grad-CAM and TCAV with the tag as the concept
# ---------------------------------------------------------------------------------------------------------------

def box_pixels(box, h:int, w:int) -> tuple[int, int, int, int]:
    "(top, bottom, left, right) pixel bounds of `box` = (left, top, right, bottom) as fractions of the side."
    l, t, r, b = box
    return round(t * h), round(b * h), round(l * w), round(r * w)


def gradcam_maps(module, layer_name:str, x:torch.Tensor, targets:list) -> np.ndarray:
    "pytorch-grad-cam's `GradCAM` maps (n, H, W) of `module` at the layer, for class index `targets[i]` of image i (as the library scales them)."
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    layer = dict(module.named_modules())[layer_name]
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        cam = GradCAM(model=module, target_layers=[layer])
        try: return cam(input_tensor=x, targets=[ClassifierOutputTarget(int(t)) for t in targets])
        finally: cam.activations_and_grads.release()


def box_mass(maps:np.ndarray, box) -> dict:
    """Per map: the share of its mass inside `box`, and whether its peak lies there; with the box's share of the image area
    (what a map spread evenly, or a peak at a random place, would give). Maps with no mass (all zero) count as nan / False."""
    t, b, l, r = box_pixels(box, *maps.shape[-2:])
    total, inside = maps.sum((1, 2)), maps[:, t:b, l:r].sum((1, 2))
    share = np.where(total > 0, inside / np.where(total > 0, total, 1), np.nan)
    peak = np.array([np.unravel_index(m.argmax(), m.shape) for m in maps]).reshape(-1, 2)
    in_box = (total > 0) & (peak[:, 0] >= t) & (peak[:, 0] < b) & (peak[:, 1] >= l) & (peak[:, 1] < r)
    return dict(share=share, peak_in_box=in_box, area=(b - t) * (r - l) / (maps.shape[-2] * maps.shape[-1]))


def tag_gradcam(module, layers:dict, x:torch.Tensor, y:torch.Tensor, carries:torch.Tensor, t_idx:int, box, tag_box) -> dict:
    """Grad-CAM of each validation image's own class, per layer: the mean share of the map's mass inside the tag's `box`
    (and inside the tag's own square, `tag_box`) and the share of maps peaking in the box, for the tagged images that carry
    the tag and for the plain images; beside each box's share of the image area. An empty map (Grad-CAM's ReLU leaves
    nothing) has no share and does not peak; `empty` counts them."""
    out = {}
    tagged, plain = (y == t_idx) & carries, y != t_idx
    for label, name in layers.items():
        maps = gradcam_maps(module, name, x, y.tolist())
        row = {}
        for which, keep in (('tagged', tagged), ('plain', plain)):
            m = maps[keep.numpy()]
            bm, tm = box_mass(m, box), box_mass(m, tag_box)
            row[which] = dict(n=int(keep.sum()), share=float(np.nanmean(bm['share'])) if len(m) else math.nan,
                              peak=float(bm['peak_in_box'].mean()) if len(m) else math.nan,
                              tag_share=float(np.nanmean(tm['share'])) if len(m) else math.nan, empty=int(np.isnan(bm['share']).sum()))
        if len(maps): row.update(area=box_mass(maps[:1], box)['area'], tag_area=box_mass(maps[:1], tag_box)['area'])
        out[label] = row
    return out


def tag_concept_sets(x:torch.Tensor, cue, n:int, n_random:int, seed:int=0) -> tuple[torch.Tensor, list]:
    "The tag concept: `n` images of `x` with the tag pasted by the cue's own edit; `n_random + 1` random sets of `n` unedited images of `x`."
    g = torch.Generator().manual_seed(seed)
    pick = lambda: x[torch.randperm(len(x), generator=g)[:n]]
    c = pick()
    return cue.edit(c, torch.ones(len(c), dtype=torch.bool)), [pick() for _ in range(n_random + 1)]


def judge_tag(kind:str, learn, verdicts, info:dict, cfg:dict, workdir:Path) -> dict:
    """Grad-CAM and TCAV on one trained tag model (ours is `verdicts`): Grad-CAM's mass in the tag's box on the validation
    images (`tag_gradcam`); TCAV with the tag concept (the cue's edit pasting it into tag-free training images) against
    `cfg['random_sets']` random sets of tag-free training images, scored on the tagged class's validation images."""
    from tell_me_why.training import split_items
    t_idx = list(learn.dls.vocab).index('tagged')
    module = DecisionOutput(learn.model, score=cfg['tcav_output'] == 'score').eval()
    layers = model_layers(learn.model)
    carries_of = {str(p): bool(c) for p, c in zip(info['paths'], info['carries_tag'])}
    valid = list(learn.dls.valid.items)
    xv, yv, to_model = images_of(learn.dls, valid)
    carries = torch.tensor([carries_of[str(p)] for p in valid])
    size = xv.shape[-1]
    tp = info['tag'].shape[0]
    tag_box = ((size - 3 - tp) / size, 3 / size, (size - 3) / size, (3 + tp) / size)  # where make_planted_tag_dataset pastes it
    t0 = time.perf_counter()
    grad = tag_gradcam(DecisionOutput(learn.model).eval(), layers, to_model(xv), yv, carries, t_idx, info['box'], tag_box)
    grad_s = time.perf_counter() - t0
    train = split_items(learn.dls, 0)
    free = [p for p in train if not carries_of[str(p)]]  # training images without the tag
    xf = images_of(learn.dls, free)[0]
    t0 = time.perf_counter()
    n = min(cfg['concept_size'], len(xf))
    concept, randoms = tag_concept_sets(xf, info['cue'], n, cfg['random_sets'], seed=cfg['seed'])
    tc = tcav_test(module, layers, to_model(xv[(yv == t_idx) & carries]), {'tag': to_model(concept)}, [to_model(r) for r in randoms],
                   t_idx, workdir/f'cav_tag_{kind}', cfg['seed'])
    sep = {lab: separability(module, layers[lab], to_model(concept), to_model(randoms[1]), cfg['seed']) for lab in layers}
    tcav_s = time.perf_counter() - t0
    return dict(gradcam=grad, gradcam_seconds=grad_s, concept_size=n,
                tcav={lab: dict(mean=tc['tag', lab]['mean'], p=tc['tag', lab]['p'], significant=tc['tag', lab]['significant'],
                                direction=tc['tag', lab]['direction'], separability=sep[lab]) for lab in layers},
                tcav_seconds=tcav_s)


def tag_unit(seed:int, cfg:dict) -> list[dict]:
    """One seed of the planted-tag task: `bench/fidelity.py`'s `tag_known_answer_run` trains the xAAEnet and the ResNet-18
    and gives our verdicts; its `on_trained` hook hands each model to `judge_tag` while the photos exist."""
    torch.set_num_threads(1)
    fid = _bench('fidelity')
    cfg = dict(cfg, seed=seed)
    with tempfile.TemporaryDirectory() as tmp:
        hook = lambda kind, learn, verdicts, info: judge_tag(kind, learn, verdicts, info, cfg, Path(tmp))
        kw = {k: cfg[k] for k in ('size', 'xaae_epochs', 'resnet_epochs') if k in cfg}
        return fid.tag_known_answer_run(seed, on_trained=hook, **kw)


@dataclass
class Task:
    name: str
    units: Callable   # (args) -> list of unit tuples
    run: Callable     # (*unit, cfg) -> list of per-model records
    what: str


TASKS = {
    'planted': Task('planted', lambda a: [(c, s) for c in a.cues for s in range(a.seeds)], planted_unit,
                    'planted cues, d = 2, 48 px, decoy on validation images'),
    'tag': Task('tag', lambda a: [(s,) for s in range(a.seeds)], tag_unit,
                'planted tag on the pets photos (64 px, classes at random), Grad-CAM and TCAV with the tag as the concept'),
}


def _star(args):
    task, unit, cfg = args
    return TASKS[task].run(*unit, cfg)


def _short(r:dict) -> str:
    if r['task'] == 'tag': return _short_tag(r)
    m = r['methods']
    tc = '; '.join(f"{k}: {sorted(f[:6] + ('+' if s > 0 else '-') for f, s in v['calls'].items())}" for k, v in m.items() if k != 'ours')
    nothing = [f[:6] for f, d in r['direct'].items() if d['state'] == 0]
    return (f"  {r['cue']:14s} seed {r['seed']} {r['model']:9s} acc {r['accuracy']:.2f}{'*' if r['beats_chance'] else ' '} "
            f"ours {sorted(f[:6] for f in m['ours']['calls'])} (all drivers {m['ours']['drivers_all']}, decoy "
            f"{'CALLED' if m['ours']['decoy_call'] else 'no'}); {tc}; does nothing: {nothing}")


def _short_tag(r:dict) -> str:
    e = r.get('extra') or {}
    g = '; '.join(f"Grad-CAM {lab}: box {v['tagged']['share']:.2f} (plain {v['plain']['share']:.2f}, area {v.get('area', math.nan):.2f}), "
                  f"peak {v['tagged']['peak']:.0%}" for lab, v in e.get('gradcam', {}).items())
    t = '; '.join(f"TCAV {lab}: {v['mean']:.2f} p {v['p']:.2g}" for lab, v in e.get('tcav', {}).items())
    return (f"  tag seed {r['seed']} {r['model']:9s} acc {r['accuracy']:.2f}{'*' if r['beats_chance'] else ' '} ours: tag "
            f"{'driver' if r['tag_driver'] else 'not a driver'}, largest |effect| {r['top']}, built-in drivers {r['builtin_drivers']}; {g}; {t}")


def run_all(tasks:list, args, cfg:dict, jobs:int=1, save:str|None=None, before:list=()) -> list:
    "Every unit of every task (in `jobs` processes); records (after those of `before`) saved to `save` after each unit."
    from concurrent.futures import ProcessPoolExecutor, as_completed
    work = [(t, u, cfg) for t in tasks for u in TASKS[t].units(args)]
    records = []
    with ProcessPoolExecutor(max(1, jobs)) as pool:
        for f in as_completed([pool.submit(_star, w) for w in work]):
            for r in f.result(): records.append(r); print(_short(r), flush=True)
            if save:
                with open(save, 'wb') as fh: pickle.dump([*before, *records], fh)
    return records


# ---------------------------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------------------------

def summary_rows(records:list) -> list[dict]:
    "One row per task, model and method: recall, false positives, decoy calls, wrong directions, separability, seconds."
    rows, records = [], [r for r in records if r['task'] != 'tag']
    keys = dict.fromkeys((r['task'], r['model'], m) for r in records for m in r['methods'])
    for task, model, method in keys:
        rs = [r for r in records if r['task'] == task and r['model'] == model and method in r['methods']]
        sep = [r for r in rs if r['beats_chance']]
        ms = [r['methods'][method] for r in rs]
        hit = lambda r: r['methods'][method]['calls'].get(r['planted']) == r['direction']
        nulls = [(r, f) for r in rs for f, d in r['direct'].items() if d['state'] == 0]
        fp = [(r, f) for r, f in nulls if f in r['methods'][method]['calls']]
        fp_b = [(r, f) for r, f in nulls if r['methods'][method]['calls_bonf'] is not None and f in r['methods'][method]['calls_bonf']]
        definite = [(r, f, s) for r in rs for f, s in r['methods'][method]['calls'].items() if r['direct'][f]['state'] in (1, -1)]
        wrong = [1 for r, f, s in definite if s != r['direct'][f]['state']]
        seps = [r['methods'][method]['separability'][f] for r, f in fp if 'separability' in r['methods'][method]]
        rows.append(dict(task=task, model=model, method=method, models=len(rs), beat_chance=len(sep),
                         recall=sum(map(hit, sep)), null_concepts=len(nulls), false_pos=len(fp),
                         false_pos_bonf=None if ms[0]['calls_bonf'] is None else len(fp_b),
                         decoy=sum(m['decoy_call'] for m in ms), calls_definite=len(definite), wrong=len(wrong),
                         fp_separability=float(np.median(seps)) if seps else math.nan,
                         seconds=float(np.median([m['seconds'] for m in ms]))))
    return rows


def print_table(rows:list):
    print(f"\n{'task':8s} {'model':9s} {'method':20s} {'beat chance':>11s} {'planted recall':>14s} {'false pos.':>11s} "
          f"{'(Bonf.)':>7s} {'decoy calls':>11s} {'wrong dir.':>10s} {'FP separab.':>11s} {'median s':>8s}")
    for r in rows:
        bonf = '' if r['false_pos_bonf'] is None else str(r['false_pos_bonf'])
        fps = '' if not np.isfinite(r['fp_separability']) else f"{r['fp_separability']:.2f}"
        print(f"{r['task']:8s} {r['model']:9s} {r['method']:20s} {r['beat_chance']:5d} / {r['models']:<3d} "
              f"{r['recall']:7d} / {r['beat_chance']:<4d} {r['false_pos']:4d} / {r['null_concepts']:<4d} {bonf:>7s} "
              f"{r['decoy']:5d} / {r['models']:<3d} {r['wrong']:3d} / {r['calls_definite']:<4d} {fps:>11s} {r['seconds']:8.1f}")


def tag_rows(records:list) -> list[dict]:
    """The planted-tag task, one row per model and method. `found` counts, among the models that beat chance: ours, the tag
    called "drives the decision"; Grad-CAM at a layer, the maps of the tagged images putting more of their mass in the tag's
    box (the mean over those images) than the box's share of the image and than the maps of the plain images (which have
    no tag there) do; TCAV at a layer, the tag concept significant with raising it raising the tagged class's logit. The
    other columns are medians over those models."""
    rows, records = [], [r for r in records if r['task'] == 'tag']
    med = lambda v: float(np.median(v)) if len(v) else math.nan
    for model in dict.fromkeys(r['model'] for r in records):
        rs = [r for r in records if r['model'] == model]
        sep = [r for r in rs if r['beats_chance']]
        base = dict(model=model, models=len(rs), beat_chance=len(sep))
        rows.append(dict(base, method='ours', found=sum(r['tag_driver'] for r in sep), largest=sum(r['tag_largest'] for r in sep),
                         builtin=sum(bool(r['builtin_drivers']) for r in rs), seconds=med([r['interventions_seconds'] for r in rs])))
        for lab in (rs[0].get('extra') or {}).get('gradcam', {}):
            g = [r['extra']['gradcam'][lab] for r in sep]
            rows.append(dict(base, method=f'Grad-CAM {lab}', found=sum(v['tagged']['share'] > max(v['area'], v['plain']['share']) for v in g),
                             share_tagged=med([v['tagged']['share'] for v in g]), share_plain=med([v['plain']['share'] for v in g]),
                             area=rs[0]['extra']['gradcam'][lab].get('area', math.nan), peak_tagged=med([v['tagged']['peak'] for v in g]),
                             peak_plain=med([v['plain']['peak'] for v in g]), tag_share=med([v['tagged']['tag_share'] for v in g]),
                             tag_area=rs[0]['extra']['gradcam'][lab].get('tag_area', math.nan),
                             empty=sum(v[w]['empty'] for v in g for w in ('tagged', 'plain')),
                             images=sum(v[w]['n'] for v in g for w in ('tagged', 'plain')), seconds=med([r['extra']['gradcam_seconds'] for r in rs])))
        for lab in (rs[0].get('extra') or {}).get('tcav', {}):
            t = [r['extra']['tcav'][lab] for r in sep]
            rows.append(dict(base, method=f'TCAV {lab}', found=sum(v['significant'] and v['direction'] > 0 for v in t),
                             wrong=sum(v['significant'] and v['direction'] < 0 for v in t), mean_score=med([v['mean'] for v in t]),
                             separability=med([v['separability'] for v in t]), seconds=med([r['extra']['tcav_seconds'] for r in rs])))
    return rows


def print_tag_table(rows:list):
    "The planted-tag table: per model and method, the tag found among the models that beat chance, and what each method measured."
    if not rows: return
    print(f"\nPlanted tag (pets photos, classes at random, a red tag in the top-right corner of 95 % of 'tagged'); 'found' counts "
          f"among the models that beat chance, the other figures are medians over them")
    print(f"{'model':9s} {'method':26s} {'beat chance':>11s} {'tag found':>9s}  {'details':60s} {'median s':>8s}")
    for r in rows:
        if r['method'] == 'ours':
            d = f"largest |effect| {r['largest']} / {r['beat_chance']}; built-in cue called a driver in {r['builtin']} / {r['models']}"
        elif r['method'].startswith('Grad-CAM'):
            d = (f"mass in box: tagged {r['share_tagged']:.2f}, plain {r['share_plain']:.2f} (area {r['area']:.2f}); peak in box: "
                 f"tagged {r['peak_tagged']:.0%}, plain {r['peak_plain']:.0%}; mass on the tag {r['tag_share']:.3f} (area {r['tag_area']:.3f}); "
                 f"empty maps {r['empty']} / {r['images']}")
        else: d = f"mean score {r['mean_score']:.2f}; significant the wrong way {r['wrong']}; concept separability {r['separability']:.2f}"
        print(f"{r['model']:9s} {r['method']:26s} {r['beat_chance']:5d} / {r['models']:<3d} {r['found']:3d} / {r['beat_chance']:<3d}  {d:60s} "
              f"{r['seconds']:8.1f}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--quick', action='store_true', help=f"cues {','.join(QUICK_CUES)} x 2 seeds")
    ap.add_argument('--tasks', default='planted', help=f"comma-separated, of: {', '.join(TASKS)}")
    ap.add_argument('--cues', default=None, help='comma-separated planted cues (default: all five; quick: ' + ','.join(QUICK_CUES) + ')')
    ap.add_argument('--seeds', type=int, default=None, help='seeds per cue, and of the tag task (default 5; quick 2)')
    ap.add_argument('--jobs', type=int, default=1, help='units run at once, one process (one torch thread) each')
    ap.add_argument('--concept-size', type=int, default=40, help='images per concept set and per random set')
    ap.add_argument('--random-sets', type=int, default=10, help='random sets each concept is tested against (>= 10 in the TCAV paper)')
    ap.add_argument('--tcav-output', choices=['logit', 'score'], default='logit',
                    help="TCAV's gradient: of the planted class's logit (the paper's) or of s = logit(planted) - logit(control)")
    ap.add_argument('--resnet-epochs', type=int, default=15)
    ap.add_argument('--per-class', type=int, default=100, help='images per class of the planted sets')
    ap.add_argument('--epochs', type=int, nargs=3, default=[1, 4, 12], help="xAAEnet's adversarial, autoencoder, classifier epochs")
    ap.add_argument('--save', default=None, metavar='FILE', help='pickle the per-model records to FILE (after each unit)')
    ap.add_argument('--load', default=None, metavar='FILE', help='print the table of the records pickled in FILE')
    a = ap.parse_args(argv)
    start = time.perf_counter()
    if a.load:
        with open(a.load, 'rb') as f: records = pickle.load(f)
    else:
        why = peers_available()
        if why: print(why); return 2
        from tell_me_why.fidelity import PLANTED_CUES
        a.cues = a.cues.split(',') if a.cues else (QUICK_CUES if a.quick else list(PLANTED_CUES))
        a.seeds = a.seeds or (2 if a.quick else 5)
        cfg = dict(size=48, per_class=a.per_class, epochs=a.epochs, resnet_epochs=a.resnet_epochs, concept_size=a.concept_size,
                   random_sets=a.random_sets, tcav_output=a.tcav_output, probe_per_class=PROBE_PER_CLASS)
        tasks = a.tasks.split(',')
        unknown = [t for t in tasks if t not in TASKS]
        if unknown: ap.error(f"--tasks: unknown {unknown}; the tasks are {', '.join(TASKS)}")
        records = []
        for t in tasks:  # each task with its own sizes: the tag task takes bench/fidelity.py's settings (64 px; --quick: shorter)
            fid = _bench('fidelity')
            c = cfg if t != 'tag' else dict(cfg, **{k: v for k, v in (fid.TAG_QUICK if a.quick else fid.TAG_DEFAULTS).items()
                                                   if k in ('size', 'xaae_epochs', 'resnet_epochs')}, concept_size=min(a.concept_size, 20))
            records += run_all([t], a, c, a.jobs, a.save, records)
    rows = summary_rows(records)
    if rows: print_table(rows)
    print_tag_table(tag_rows(records))
    print(f"total {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == '__main__':
    sys.exit(main())
