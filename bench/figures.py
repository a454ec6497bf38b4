"""Benchmark of the latent figures (issue 5, "t-SNE figure" row).

`bench_tsne` times `save_latent_tsne_figure` (t-SNE + drawing + PNG) against scikit-learn's `TSNE()` with
default settings on the same latent matrix, within one run, and compares the neighbourhood quality of the two
maps with `sklearn.manifold.trustworthiness` (k = 10). Target: time ratio <= 0.7 and trustworthiness within
0.02 of the default run's. Run: `python bench/figures.py` (exit code 1 when a target is missed).
"""
from __future__ import annotations

import argparse, sys, tempfile, time
from pathlib import Path
from unittest import mock

import numpy as np
from sklearn.manifold import TSNE, trustworthiness

from tell_me_why import latent_figures

TSNE_RATIO_TARGET, TRUST_TOLERANCE = 0.7, 0.02


def make_latent_mixture(n:int=5000, d:int=128, seed:int=0, n_clusters:int=6) -> np.ndarray:
    "A latent-like matrix: clusters with their own 10-d elongated shape plus isotropic noise (float32)."
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1.5, (n_clusters, d))
    labels = rng.integers(0, n_clusters, n)
    shapes = rng.normal(0, 1, (n_clusters, 10, d)) / np.sqrt(d)
    z = (centres[labels] + np.einsum('nj,njd->nd', rng.normal(0, 3, (n, 10)), shapes[labels])
         + rng.normal(0, 0.5, (n, d)))
    return z.astype(np.float32)


def bench_tsne(n:int=5000, d:int=128, seed:int=0) -> dict:
    "Seconds and trustworthiness of `save_latent_tsne_figure` vs scikit-learn `TSNE()` defaults on one z."
    z = make_latent_mixture(n, d, seed)
    t0 = time.perf_counter()
    emb_default = TSNE(random_state=seed).fit_transform(z)
    t_default = time.perf_counter() - t0

    captured = {}
    real = latent_figures.latent_tsne_embedding
    def recording(*args, **kwargs):
        captured['out'] = out = real(*args, **kwargs)
        return out
    with tempfile.TemporaryDirectory() as tmp, \
         mock.patch.object(latent_figures, 'latent_tsne_embedding', recording):
        t0 = time.perf_counter()
        latent_figures.save_latent_tsne_figure(z, Path(tmp)/'tsne.png', phase='bench', max_points=n,
                                               seed=seed, show=False)
        t_figure = time.perf_counter() - t0
    emb_figure, idx, _ = captured['out']
    assert len(idx) == n, "the benchmark must map every row"
    tw_default = trustworthiness(z, emb_default, n_neighbors=10)
    tw_figure = trustworthiness(z, emb_figure, n_neighbors=10)
    return dict(n=n, d=d, sklearn_default_s=t_default, figure_s=t_figure, ratio=t_figure / t_default,
                trust_default=float(tw_default), trust_figure=float(tw_figure),
                trust_diff=float(tw_default - tw_figure))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--n', type=int, default=5000); p.add_argument('--d', type=int, default=128)
    p.add_argument('--seed', type=int, default=0)
    a = p.parse_args(argv)
    r = bench_tsne(a.n, a.d, a.seed)
    ok = r['ratio'] <= TSNE_RATIO_TARGET and abs(r['trust_diff']) <= TRUST_TOLERANCE
    print(f"| figure | measured | target |\n|---|---|---|\n"
          f"| t-SNE figure, {r['n']} x {r['d']} z | {r['figure_s']:.1f} s vs {r['sklearn_default_s']:.1f} s "
          f"= {r['ratio']:.2f}x; trustworthiness {r['trust_figure']:.4f} vs {r['trust_default']:.4f} "
          f"| <= {TSNE_RATIO_TARGET}x, within {TRUST_TOLERANCE} | {'ok' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
