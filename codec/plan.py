"""What `auto` effort means on this machine, measured on the loaded models, and the models
refinement searches run on.

`measure` times the models once, on a small image: the encoder's forward pass and, for each
precision a search could run in, one refinement step (decoder forward and backward) and one
scoring forward pass, on the decoder and on its half-resolution proxy where the model has one.
`choose_plan` is a pure function of those costs: `auto` is the largest effort whose refinement
fits the budget, so that the whole encode takes at most `BUDGET` times the encoder's forward
pass on every machine; a search on the decoder in the cheaper precision if one step fits, else
on the proxy if one of its steps fits, else none. bfloat16 is timed only where the CPU has
native bfloat16 kernels (`hardware.fast_dtype`), so no bfloat16 twin is built elsewhere.
`measure_plan` does all of this for a codec's models (a few seconds on a 2-core CPU) and
`search_models` gives a plan's search models.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial

import torch

from .hardware import Machine, detect, fast_dtype
from .models import LatentAutoencoder
from .models.taesd import search_proxy
from .refine import EFFORT_STEPS
from .settings import MAX_EFFORT

Searcher = Callable[[bool], Callable[[torch.Tensor], torch.Tensor]]
"""`grad` -> a function latents -> images, run with autograd or without."""

BUDGET = 3.0
"""The default encode takes at most this many times the encoder's forward pass."""
CALIBRATION_SIZE = 256
"""Side of the square image the costs are timed on (costs scale with pixels)."""
REPEATS = 2
"""Runs of each timed pass; the fastest counts (the first pays one-time kernel setup)."""
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Costs:
    """Seconds one pass takes on the calibration image, per search precision (dtype name), on
    the decoder (`step`, `score`) and on its proxy (`proxy_step`, `proxy_score`; empty where the
    model has none)."""

    encode: float
    step: Mapping[str, float]
    score: Mapping[str, float]
    proxy_step: Mapping[str, float] = field(default_factory=dict)
    proxy_score: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Plan:
    """How this machine encodes: the search precision and what `auto` effort means."""

    search_dtype: str
    auto_effort: int
    search: str
    """What `auto` runs: `full` (steps on the decoder, as explicit efforts always do), `proxy`
    (steps on its half-resolution proxy) or `none` (effort 0)."""
    budget: float
    ratio: float
    """The modelled encode time at `auto_effort`, in encoder forward passes."""
    machine: Machine
    costs: Costs

    def describe(self) -> str:
        """One line for logs and `/healthz`."""
        steps = EFFORT_STEPS[self.auto_effort]
        model = " half-resolution proxy" if self.search == "proxy" else ""
        return (
            f"auto effort {self.auto_effort} ({steps} {self.search_dtype}{model} search steps), "
            f"encode ≈ {self.ratio:.2f}× the encoder forward pass (budget {self.budget:g}×) "
            f"on {self.machine.describe()}"
        )

    def as_dict(self) -> dict[str, object]:
        """The plan for JSON."""
        return {
            "auto_effort": self.auto_effort,
            "search": self.search,
            "search_dtype": self.search_dtype,
            "steps": EFFORT_STEPS[self.auto_effort],
            "encode_ratio": round(self.ratio, 3),
            "budget": self.budget,
            "machine": self.machine.as_dict(),
            "seconds": {
                "encode": round(self.costs.encode, 4),
                "step": {k: round(v, 4) for k, v in self.costs.step.items()},
                "score": {k: round(v, 4) for k, v in self.costs.score.items()},
                "proxy_step": {k: round(v, 4) for k, v in self.costs.proxy_step.items()},
                "proxy_score": {k: round(v, 4) for k, v in self.costs.proxy_score.items()},
            },
        }


def encode_ratio(costs: Costs, dtype: str, steps: int, proxy: bool = False) -> float:
    """Modelled encode time with `steps` search steps in `dtype` (on the proxy if `proxy`), in
    encoder forward passes: the forward pass, the steps, and the exact scoring of the
    candidates the search keeps (the last iterate; with two steps or more also the best one
    seen)."""
    step, score = (costs.proxy_step, costs.proxy_score) if proxy else (costs.step, costs.score)
    scored = 0 if steps == 0 else 1 if steps == 1 else 2
    return 1 + (steps * step[dtype] + scored * score[dtype]) / costs.encode


def choose_plan(machine: Machine, costs: Costs, budget: float = BUDGET) -> Plan:
    """The largest effort that fits `budget` searching on the decoder in the precision with the
    cheaper step; if not even one step fits, the same on the proxy; else effort 0."""
    plan = partial(Plan, budget=budget, machine=machine, costs=costs)
    for search, steps in (("full", costs.step), ("proxy", costs.proxy_step)):
        if not steps:
            continue
        dtype = min(steps, key=lambda name: steps[name])
        proxy = search == "proxy"
        effort = max(
            e
            for e in range(MAX_EFFORT + 1)
            if encode_ratio(costs, dtype, EFFORT_STEPS[e], proxy) <= budget
        )
        if effort:
            ratio = encode_ratio(costs, dtype, EFFORT_STEPS[effort], proxy)
            return plan(search_dtype=dtype, auto_effort=effort, search=search, ratio=ratio)
    dtype = min(costs.step, key=lambda name: costs.step[name])
    return plan(search_dtype=dtype, auto_effort=0, search="none", ratio=1.0)


def search_dtypes(machine: Machine, model_dtype: torch.dtype) -> list[torch.dtype]:
    """The precisions worth timing for searches: the model's own, and `fast_dtype`'s."""
    return list(dict.fromkeys([model_dtype, fast_dtype(machine, model_dtype)]))


def measure(
    encode: Callable[[torch.Tensor], torch.Tensor],
    searchers: Mapping[str, Searcher],
    proxies: Mapping[str, Searcher] | None = None,
    size: int = CALIBRATION_SIZE,
    repeats: int = REPEATS,
) -> Costs:
    """Time `encode` (images -> latents) and, per dtype name, a search decoder and its proxy.

    `searchers[name](grad)` gives a function latents -> images run with autograd (`grad`,
    then the step also runs backward) or without (a scoring pass); `proxies` the same for the
    proxies. Each pass counts its fastest of `repeats` runs, so that the first run's one-time
    kernel setup is not timed. The runs are interleaved (every pass once, then every pass
    again): a burst of other work on the machine then slows one run of every pass rather than
    every run of one pass, which would skew their ratios and so the plan.
    """
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(1, 3, size, size, generator=generator)
    latents = encode(images)
    encode_s: dict[str, float] = {}
    step, score, proxy_step, proxy_score = {}, {}, {}, {}
    passes = [(encode_s, "encode", lambda: encode(images))]
    for models, tables in ((searchers, (step, score)), (proxies or {}, (proxy_step, proxy_score))):
        for name, searcher in models.items():
            for grad, table in zip((True, False), tables, strict=True):
                passes.append((table, name, partial(_pass(searcher(grad), grad), latents)))
    for _ in range(repeats):
        for table, name, run in passes:
            table[name] = min(table.get(name, float("inf")), _seconds(run))
    return Costs(encode_s["encode"], step, score, proxy_step, proxy_score)


def _pass(decode: Callable[[torch.Tensor], torch.Tensor], grad: bool) -> Callable:
    """One pass of `decode`, waited for (`.item()` syncs a GPU)."""

    def run(latents: torch.Tensor) -> None:
        if not grad:
            with torch.no_grad():
                decode(latents).float().sum().item()
            return
        z = latents.clone().requires_grad_(True)
        decode(z).float().square().sum().backward()
        z.grad.sum().item()

    return run


def _seconds(fn: Callable[[], object]) -> float:
    """Seconds one call of `fn` takes."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


@dataclass(frozen=True)
class SearchModels:
    """A plan and the models its refinement searches run on."""

    plan: Plan
    decoder: LatentAutoencoder
    """The decoder in the plan's search precision (itself if that is its own): explicit efforts
    search on it."""
    auto: LatentAutoencoder
    """What `auto` effort searches on: `decoder`'s half-resolution proxy where the plan says
    so (`plan.search`), else `decoder`."""


def measure_plan(encoder: LatentAutoencoder, decoder: LatentAutoencoder) -> SearchModels:
    """This machine's plan for these models (`measure`, then `choose_plan`; logged), and its
    search models, which are among those timed."""
    machine = detect(decoder.device)
    twins = {
        str(dtype).removeprefix("torch."): decoder.twin(dtype)
        for dtype in search_dtypes(machine, decoder.dtype)
    }
    proxies = {name: search_proxy(model) for name, model in twins.items()}
    proxies = {name: model for name, model in proxies.items() if model is not None}
    costs = measure(
        encoder.encode,
        {name: _searcher(model) for name, model in twins.items()},
        {name: _searcher(model) for name, model in proxies.items()},
    )
    plan = choose_plan(machine, costs)
    log.info("encode plan: %s", plan.describe())
    search = twins[plan.search_dtype]
    return SearchModels(
        plan, search, proxies[plan.search_dtype] if plan.search == "proxy" else search
    )


def search_models(plan: Plan, decoder: LatentAutoencoder) -> SearchModels:
    """The search models of a given plan: `decoder`'s twin in its precision, and its proxy
    where `auto` searches on one."""
    search = decoder.twin(getattr(torch, plan.search_dtype))
    return SearchModels(plan, search, search_proxy(search) if plan.search == "proxy" else search)


def _searcher(model: LatentAutoencoder) -> Searcher:
    """`measure`'s view of a search model: `grad` -> latents -> images."""

    def with_grad(grad: bool) -> Callable[[torch.Tensor], torch.Tensor]:
        def decode(latents: torch.Tensor) -> torch.Tensor:
            with model.exclusive(), torch.set_grad_enabled(grad):
                return model.decode_differentiable(latents.to(model.device, model.dtype))

        return decode

    return with_grad
