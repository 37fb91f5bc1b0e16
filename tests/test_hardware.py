"""What `auto` effort means on each machine class: the plan is a pure function of measured costs
(`codec.plan`), on the machine `codec.hardware` detects."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from codec import CodecSettings, SettingsError, load_codec
from codec.hardware import Machine, detect, fast_dtype
from codec.images import tensor_to_image
from codec.plan import (
    BUDGET,
    Costs,
    choose_plan,
    encode_ratio,
    measure,
    measure_plan,
    search_dtypes,
    search_models,
)
from codec.refine import EFFORT_STEPS
from tests.tiny_models import tiny_taesd


def _cpu(capability: str, native_bf16: bool, amx: bool = False) -> Machine:
    return Machine("cpu", "test CPU", capability, native_bf16, amx, 2, torch.__version__)


AVX512_BF16 = _cpu("AVX512", native_bf16=True)
AVX2 = _cpu("AVX2", native_bf16=False)
AMX = _cpu("AVX512", native_bf16=True, amx=True)
H100 = Machine("cuda", "NVIDIA H100", "AVX512", True, False, 16, torch.__version__)

# Seconds for a 768x512 image on 2-core AMD EPYC machines of each class: AVX-512 BF16 from the
# README's measurements (a bfloat16 step and scoring pass: 2.2 s), AVX2 measured with TAESD in
# float32 (its half-resolution proxy: a step 0.9x and a scoring pass 0.4x the encoder's
# forward pass); the GPU's are illustrative (a pass of a few milliseconds).
AVX512_COSTS = Costs(encode=1.79, step={"float32": 3.4, "bfloat16": 1.3}, score={
    "float32": 1.9, "bfloat16": 0.9}, proxy_step={"float32": 1.6, "bfloat16": 0.6},
    proxy_score={"float32": 0.9, "bfloat16": 0.4})  # fmt: skip
AVX2_COSTS = Costs(encode=2.8, step={"float32": 5.4}, score={"float32": 4.4})
AVX2_PROXY_COSTS = Costs(encode=3.3, step={"float32": 7.1}, score={"float32": 2.9},
                         proxy_step={"float32": 3.0}, proxy_score={"float32": 1.3})  # fmt: skip
CUDA_COSTS = Costs(encode=0.004, step={"float16": 0.0002}, score={"float16": 0.0001},
                   proxy_step={"float16": 0.0001}, proxy_score={"float16": 0.00005})  # fmt: skip


def test_avx512_bf16_searches_in_bfloat16_one_step_within_the_budget():
    plan = choose_plan(AVX512_BF16, AVX512_COSTS)
    assert plan.search_dtype == "bfloat16" and plan.search == "full"
    assert EFFORT_STEPS[plan.auto_effort] == 1
    assert plan.ratio == pytest.approx(1 + (1.3 + 0.9) / 1.79) and plan.ratio <= BUDGET


def test_avx2_never_searches_in_bfloat16_and_stays_within_the_budget():
    assert search_dtypes(AVX2, torch.float32) == [torch.float32]
    plan = choose_plan(AVX2, AVX2_COSTS)
    assert plan.search_dtype == "float32" and plan.ratio <= BUDGET
    assert plan.auto_effort == 0 and plan.search == "none"


def test_avx2_takes_one_proxy_step_where_a_decoder_step_does_not_fit():
    assert encode_ratio(AVX2_PROXY_COSTS, "float32", 1) > BUDGET
    plan = choose_plan(AVX2, AVX2_PROXY_COSTS)
    assert plan.search == "proxy" and plan.search_dtype == "float32"
    assert EFFORT_STEPS[plan.auto_effort] == 1
    assert plan.ratio == pytest.approx(1 + (3.0 + 1.3) / 3.3) and plan.ratio <= BUDGET
    assert "half-resolution proxy" in plan.describe()
    assert plan.as_dict()["search"] == "proxy"
    assert plan.as_dict()["seconds"]["proxy_step"] == {"float32": 3.0}


def test_no_search_where_not_even_a_proxy_step_fits():
    plan = choose_plan(AVX2, AVX2_PROXY_COSTS, budget=2.0)
    assert plan.auto_effort == 0 and plan.search == "none" and plan.ratio == 1.0
    assert encode_ratio(AVX2_PROXY_COSTS, "float32", 1, proxy=True) > 2.0


def test_the_decoder_is_searched_whenever_one_of_its_steps_fits():
    for machine, costs in ((AVX512_BF16, AVX512_COSTS), (AMX, AVX512_COSTS), (H100, CUDA_COSTS)):
        assert choose_plan(machine, costs).search == "full"
    generous = choose_plan(AVX2, AVX2_PROXY_COSTS, budget=6.0)
    assert generous.search == "full" and generous.auto_effort == 1


def test_bfloat16_is_timed_only_where_native_and_only_for_a_float32_model():
    assert search_dtypes(AVX512_BF16, torch.float32) == [torch.float32, torch.bfloat16]
    assert search_dtypes(AMX, torch.float32) == [torch.float32, torch.bfloat16]
    assert search_dtypes(H100, torch.float16) == [torch.float16]


def test_renders_decode_in_bfloat16_only_where_it_is_native():
    assert fast_dtype(AVX512_BF16, torch.float32) == torch.bfloat16
    assert fast_dtype(AVX2, torch.float32) == torch.float32
    assert fast_dtype(H100, torch.float16) == torch.float16
    model = tiny_taesd()
    codec = load_codec(CodecSettings(), encoder=model, decoder=model)
    native = detect("cpu").native_bf16
    assert codec.render_decoder.dtype == (torch.bfloat16 if native else torch.float32)
    exact = load_codec(CodecSettings(render_precision="model"), encoder=model, decoder=model)
    assert exact.render_decoder is model
    settings = CodecSettings.from_env({"LATENT_GALLERY_RENDER_PRECISION": "fp8"})
    with pytest.raises(SettingsError, match="RENDER_PRECISION='fp8': expected auto or model"):
        load_codec(settings)


def test_bfloat16_is_chosen_only_when_measured_faster():
    slow_bf16 = Costs(encode=1.0, step={"float32": 0.5, "bfloat16": 0.9},
                      score={"float32": 0.3, "bfloat16": 0.2})  # fmt: skip
    assert choose_plan(AVX512_BF16, slow_bf16).search_dtype == "float32"


def test_a_fast_gpu_gets_many_steps_and_still_fits_the_budget():
    plan = choose_plan(H100, CUDA_COSTS)
    assert plan.search_dtype == "float16"
    assert EFFORT_STEPS[plan.auto_effort] == 30
    assert plan.ratio <= BUDGET < encode_ratio(CUDA_COSTS, "float16", EFFORT_STEPS[5])


@pytest.mark.parametrize("budget", [1.0, 2.0, 3.0, 10.0, 1000.0])
def test_the_chosen_effort_is_the_largest_that_fits(budget):
    plan = choose_plan(AVX512_BF16, AVX512_COSTS, budget)
    proxy = plan.search == "proxy"
    ratios = [encode_ratio(AVX512_COSTS, "bfloat16", steps, proxy) for steps in EFFORT_STEPS]
    assert plan.search == ("none" if budget == 1.0 else "proxy" if budget == 2.0 else "full")
    assert ratios[plan.auto_effort] <= budget
    assert plan.auto_effort == len(EFFORT_STEPS) - 1 or ratios[plan.auto_effort + 1] > budget


def test_detect_reports_what_torch_reports():
    machine = detect("cpu")
    assert machine.capability == torch.backends.cpu.get_cpu_capability()
    assert machine.native_bf16 == torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert machine.cores == torch.get_num_threads()
    assert machine.capability in machine.describe() and str(machine.cores) in machine.describe()


def test_measure_times_each_pass_it_is_given_interleaved():
    calls: list[str] = []

    def searcher(name: str):
        def with_grad(grad: bool):
            def decode(latents: torch.Tensor) -> torch.Tensor:
                calls.append(f"{name} {'step' if grad else 'score'} {latents.shape[-1]}")
                return latents.repeat_interleave(8, -1).repeat_interleave(8, -2)[:, :3]

            return decode

        return with_grad

    def encode(images: torch.Tensor) -> torch.Tensor:
        return images[:, :, ::8, ::8].repeat(1, 2, 1, 1)[:, :4]

    searchers = {"float32": searcher("f"), "bfloat16": searcher("b")}
    costs = measure(encode, searchers, {"float32": searcher("p")}, size=128, repeats=3)
    assert set(costs.step) == set(costs.score) == {"float32", "bfloat16"}
    assert set(costs.proxy_step) == set(costs.proxy_score) == {"float32"}
    timed = [*costs.step.values(), *costs.score.values(), *costs.proxy_step.values()]
    assert costs.encode > 0 and all(v > 0 for v in timed)
    # every pass once, then every pass again: a burst of load cannot hit all runs of one pass
    one_round = [f"{n} {k} 16" for n in "fbp" for k in ("step", "score")]
    assert calls == one_round * 3


def test_a_codec_measures_its_plan_once():
    model = tiny_taesd()
    codec = load_codec(CodecSettings(tile=128), encoder=model, decoder=model)
    assert codec.measured_plan is None
    plan = codec.plan
    assert codec.plan is plan and codec.measured_plan is plan and plan.machine == detect("cpu")
    assert getattr(torch, plan.search_dtype) in search_dtypes(plan.machine, torch.float32)
    assert set(plan.costs.proxy_step) == set(plan.costs.step)


def test_the_measured_plan_searches_in_its_precision_on_models_it_timed():
    model = tiny_taesd()
    measured = measure_plan(model, model)
    plan = measured.plan
    assert str(measured.decoder.dtype) == f"torch.{plan.search_dtype}"
    assert measured.auto.pixel_scale == (2 if plan.search == "proxy" else 1)
    assert measured.auto.dtype == measured.decoder.dtype


def test_compress_hands_back_no_image_from_a_search_in_another_precision():
    model = tiny_taesd()
    pinned = choose_plan(AVX512_BF16, AVX512_COSTS)
    assert search_models(pinned, model).decoder.dtype == torch.bfloat16
    settings = CodecSettings(tile=128, render_precision="model")  # renders in float32
    codec = load_codec(settings, encoder=model, decoder=model, plan=pinned)
    image = tensor_to_image(torch.rand(3, 48, 64, generator=torch.Generator().manual_seed(0)))
    encoded = codec.compress(image, quality=50, effort=1)
    assert encoded.image is None and codec.decompress(encoded.data).size == (64, 48)
    assert np.asarray(codec.decompress(encoded.data)).std() > 0


def test_auto_on_a_proxy_plan_hands_back_no_image_and_explicit_efforts_search_the_decoder():
    model = tiny_taesd()
    pinned = choose_plan(AVX2, AVX2_PROXY_COSTS)
    searches = search_models(pinned, model)
    assert searches.auto.pixel_scale == 2 and searches.decoder is model
    settings = CodecSettings(tile=128, render_precision="model")  # as on AVX2: float32
    codec = load_codec(settings, encoder=model, decoder=model, plan=pinned)
    image = tensor_to_image(torch.rand(3, 48, 64, generator=torch.Generator().manual_seed(0)))
    encoded = codec.compress(image, quality=50, effort="auto")
    assert encoded.image is None and codec.decompress(encoded.data).size == (64, 48)
    explicit = codec.compress(image, quality=50, effort=1)
    assert explicit.image is not None and explicit.image.size == (64, 48)
