"""The gradient descent of the tools that train: Adam on a cosine-decayed rate, with a
progress bar."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterable

import torch
from tqdm import tqdm


def descend(
    parameters: Iterable[torch.nn.Parameter],
    loss: Callable[[], torch.Tensor],
    steps: int,
    lr: float,
    shown: Callable[[float], str] = lambda mse: f"{-10 * math.log10(max(mse, 1e-10)):.2f} dB",
) -> None:
    """`steps` Adam steps on `loss()` (a new batch each call), the rate decayed from `lr` on a
    cosine; a progress bar on stderr shows the loss as `shown` puts it (by default a squared
    error as PSNR)."""
    optimizer = torch.optim.Adam(parameters, lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda i: 0.5 * (1 + math.cos(math.pi * i / steps))
    )
    bar = tqdm(range(steps), desc="training", unit="step", file=sys.stderr)
    for _ in bar:
        value = loss()
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
        schedule.step()
        bar.set_postfix(loss=shown(value.item()))
