"""Tiled model runs match whole runs and show no seams."""

from __future__ import annotations

import itertools

import pytest
import torch

from codec.tiling import run_tiled, tile_spans


@pytest.mark.parametrize(
    ("length", "tile", "overlap", "align"),
    [(100, 32, 8, 1), (64, 64, 8, 1), (65, 64, 8, 1), (10, 32, 4, 1), (1024, 768, 64, 8),
     (2048, 768, 64, 8), (776, 768, 128, 8), (4096, 1024, 16, 1)],
)  # fmt: skip
def test_tile_spans_cover_the_length_with_the_fewest_even_tiles(length, tile, overlap, align):
    spans = tile_spans(length, tile, overlap, align)
    covered = set()
    for start, size in spans:
        assert (size <= tile and start % align == 0 and size % align == 0) or size == length
        covered.update(range(start, start + size))
    assert covered == set(range(length))
    assert spans[-1][0] + spans[-1][1] == length
    assert len({size for _, size in spans}) == 1
    assert len(spans) == (1 if length <= tile else -(-(length - overlap) // (tile - overlap)))
    for (a, size), (b, _) in itertools.pairwise(spans):
        assert a + size - b >= overlap - align + 1  # neighbours share the overlap


def test_a_length_just_over_a_tile_is_two_half_tiles():
    assert tile_spans(1024, 768, 128, 8) == [(0, 576), (448, 576)]


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
