"""Tiled model runs match whole runs and show no seams."""

from __future__ import annotations

import torch

from codec.tiling import run_tiled, tile_starts


def test_tile_starts_cover_the_length():
    for length, tile, overlap in [(100, 32, 8), (64, 64, 8), (65, 64, 8), (10, 32, 4)]:
        starts = tile_starts(length, tile, overlap)
        covered = set()
        for start in starts:
            covered.update(range(start, min(start + tile, length)))
        assert covered == set(range(length))
        assert starts[-1] + min(tile, length) == length


def test_pointwise_function_is_exact_through_tiles():
    x = torch.rand(2, 4, 37, 53)
    upsample = torch.nn.Upsample(scale_factor=8, mode="nearest")
    whole = upsample(x)
    tiled = run_tiled(upsample, x, tile=16, overlap=4, scale=8)
    torch.testing.assert_close(tiled, whole)


def test_convolution_has_no_visible_seams():
    torch.manual_seed(0)
    conv = torch.nn.Sequential(
        torch.nn.Conv2d(3, 3, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(3, 3, 3, padding=1)
    )
    x = torch.rand(1, 3, 96, 96)
    with torch.no_grad():
        whole = conv(x)
        tiled = run_tiled(conv, x, tile=40, overlap=16, scale=1)
    assert (tiled - whole).abs().max() < 1e-5


def test_small_input_goes_through_whole():
    calls = []

    def record(t):
        calls.append(t.shape)
        return t * 2

    x = torch.rand(1, 1, 8, 8)
    torch.testing.assert_close(run_tiled(record, x, tile=8, overlap=2, scale=1), x * 2)
    assert calls == [(1, 1, 8, 8)]
