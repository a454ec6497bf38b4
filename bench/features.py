"""Benchmarks for the feature-score table (issue 5, rows "feature table cost" and "feature table, parallel").

Times are wall-clock (`time.perf_counter`) after one warm-up pass; each figure is the best of
`repeats` runs (best-of is the least noisy estimate on a shared machine), and the two timings being
compared are interleaved run by run so that load drifting on the machine hits both alike. The
reported ratios are what the targets apply to.
"""
from __future__ import annotations

import os, statistics, time, warnings
from pathlib import Path

import torch
from torchvision.io import ImageReadMode, decode_image

from tell_me_why.feature_scores import compute_feature_score_table

__all__ = ['bench_paths', 'bench_feature_table', 'bench_feature_parallel', 'FEATURE_TABLE_TARGET']

FEATURE_TABLE_TARGET = 3.0  # whole table ÷ decode-only (grey + RGB) must be at most this


def bench_paths(folder=None, n:int=200) -> list[str]:
    "`n` image paths from `folder` (default: the shared 184-image pets sample, else the bundled one), repeated cyclically to reach `n`."
    if folder is None:
        shared = Path(__file__).resolve().parents[2]/'shared'/'data'/'pets_sample'/'images'  # ../shared beside the repo
        folder = shared if shared.is_dir() else Path(__import__('tell_me_why').__file__).parent/'sample_data/pets/images'
    files = sorted(str(p) for p in Path(folder).iterdir() if p.suffix.lower() in ('.jpg', '.jpeg', '.png'))
    if not files: raise FileNotFoundError(f"no .jpg/.png images in {folder}")
    return [files[i % len(files)] for i in range(n)]


def _decode_only(paths):
    "The baseline: read each file once, decode it as grey and as RGB, nothing else."
    for p in paths:
        data = torch.frombuffer(bytearray(Path(p).read_bytes()), dtype=torch.uint8)
        decode_image(data, mode=ImageReadMode.GRAY)
        decode_image(data, mode=ImageReadMode.RGB)


def _timed(fn):
    t0 = time.perf_counter(); fn(); return time.perf_counter() - t0


def _interleaved(fns:dict, repeats:int) -> dict:
    "Warm up each fn once, then time them in turn `repeats` times; {name: [seconds, ...]}."
    for fn in fns.values(): fn()
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items(): times[k].append(_timed(fn))
    return times


def bench_feature_table(paths, repeats:int=3) -> dict:
    "Serial full table (all eleven scores) vs decode-only (grey + RGB) on the same files; ratio target ≤ 3."
    paths = list(paths)
    old_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the table runs torch single-threaded by default; make the baseline match
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', DeprecationWarning)  # torchvision 0.29 decode deprecation notice
            times = _interleaved({
                'decode': lambda: _decode_only(paths),
                'table': lambda: compute_feature_score_table(paths, progress=False, n_workers=0),
            }, repeats)
    finally: torch.set_num_threads(old_threads)
    decode_s, table_s = min(times['decode']), min(times['table'])
    return dict(n_images=len(paths), repeats=repeats,
                decode_s=decode_s, table_s=table_s, ratio=table_s / decode_s,
                ratio_median_of_pairs=statistics.median(t / d for t, d in zip(times['table'], times['decode'])),
                decode_ms_per_image=1e3 * decode_s / len(paths), table_ms_per_image=1e3 * table_s / len(paths),
                target=FEATURE_TABLE_TARGET, ok=table_s / decode_s <= FEATURE_TABLE_TARGET)


def bench_feature_parallel(paths, repeats:int=3) -> dict:
    "Full table with one worker thread vs one per CPU core (`n_workers=-1`); reports the speed-up."
    paths = list(paths)
    cores = os.cpu_count() or 1
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', DeprecationWarning)
        times = _interleaved({
            'one': lambda: compute_feature_score_table(paths, progress=False, n_workers=1),
            'all': lambda: compute_feature_score_table(paths, progress=False, n_workers=-1),
        }, repeats)
    one_s, all_s = min(times['one']), min(times['all'])
    return dict(n_images=len(paths), repeats=repeats, cores=cores, one_worker_s=one_s, all_cores_s=all_s,
                speedup=one_s / all_s)


if __name__ == '__main__':
    ps = bench_paths()
    print(bench_feature_table(ps))
    print(bench_feature_parallel(ps))
