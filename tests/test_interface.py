"""The SR interface contract, for every registered method; registry and error behaviour."""

from __future__ import annotations

import pytest
import torch

from srbench import SRMethod, UnsupportedSteps, create_method, list_methods, register_method
from srbench.interface import SRBenchError, WeightsInfo
from srbench.registry import get_method_class
from tests.method_factories import FACTORIES

LR_SIZE = (1, 3, 24, 20)  # non-square, small: the contract, not quality


def test_every_registered_method_has_a_contract_factory() -> None:
    assert set(list_methods()) >= {"bicubic", "realesrgan"}
    # methods srbench ships (test plugins imported in-process by other tests aside); a method returning
    # outputs made elsewhere (source: external) is not a model and has its own tests (test_external.py)
    shipped = {n for n in list_methods() if not get_method_class(n).__module__.startswith("tests.")}
    models = {n for n in shipped if get_method_class(n).source != "external"}
    assert "precomputed" in shipped and "precomputed" not in models
    missing = models - set(FACTORIES)
    assert not missing, f"add contract factories for {sorted(missing)} in tests/method_factories.py"


@pytest.fixture(scope="module", params=sorted(FACTORIES))
def loaded_method(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> SRMethod:
    method = FACTORIES[request.param](tmp_path_factory.mktemp(request.param))
    method.load("cpu", torch.float32)
    return method


def _first_steps(method: SRMethod) -> int:
    supported = method.supported_steps()
    return 1 if supported is None else min(supported)


def test_contract_shape_range_determinism(loaded_method: SRMethod) -> None:
    m = loaded_method
    lr = torch.rand(LR_SIZE, generator=torch.Generator().manual_seed(0))
    steps = _first_steps(m)
    out1 = m.upscale(lr, steps=steps, generator=torch.Generator().manual_seed(7))
    out2 = m.upscale(lr, steps=steps, generator=torch.Generator().manual_seed(7))
    assert out1.shape == (1, 3, LR_SIZE[2] * m.scale, LR_SIZE[3] * m.scale)
    assert out1.dtype == torch.float32
    assert float(out1.min()) >= 0.0 and float(out1.max()) <= 1.0
    assert torch.equal(out1, out2), "same seed must give the same output"
    # the output follows the input: a different LR gives a different SR
    out3 = m.upscale(lr.flip(-1), steps=steps, generator=torch.Generator().manual_seed(7))
    assert not torch.allclose(out1, out3)


def test_contract_batch_and_weights_label(loaded_method: SRMethod) -> None:
    m = loaded_method
    lr = torch.rand((2, 3, 16, 16), generator=torch.Generator().manual_seed(1))
    out = m.upscale(lr, steps=_first_steps(m), generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 3, 16 * m.scale, 16 * m.scale)
    info = m.weights_info()
    assert isinstance(info, WeightsInfo) and info.label in ("real", "random") and info.id


def test_contract_rejects_bad_input(loaded_method: SRMethod) -> None:
    with pytest.raises(ValueError, match=r"\(B,3,h,w\)"):
        loaded_method.upscale(torch.rand(3, 16, 16), steps=_first_steps(loaded_method))
    with pytest.raises(ValueError, match="float"):
        loaded_method.upscale(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), steps=_first_steps(loaded_method))


def test_unsupported_steps_is_a_clear_error() -> None:
    m = create_method("bicubic")
    m.load()
    with pytest.raises(UnsupportedSteps, match=r"'bicubic' cannot run steps=3; supported: \[1\]"):
        m.upscale(torch.rand(1, 3, 8, 8), steps=3)
    with pytest.raises(UnsupportedSteps, match="positive"):
        m.check_steps(0)


def test_upscale_before_load_is_refused() -> None:
    with pytest.raises(SRBenchError, match="call load"):
        create_method("bicubic").upscale(torch.rand(1, 3, 8, 8), steps=1)


def test_registry_unknown_name_and_duplicates() -> None:
    with pytest.raises(SRBenchError, match=r"unknown method 'nope'.*bicubic"):
        create_method("nope")
    with pytest.raises(SRBenchError, match="already registered"):

        @register_method("bicubic")
        class Other(SRMethod):  # pragma: no cover - never instantiated
            pass


def test_create_from_config_mapping_passes_options() -> None:
    m = create_method({"name": "bicubic", "scale": 2})
    m.load()
    assert m.upscale(torch.rand(1, 3, 8, 8), steps=1).shape == (1, 3, 16, 16)
    assert get_method_class("bicubic").name == "bicubic"


def test_method_output_checks_catch_bad_methods() -> None:
    class Broken(SRMethod):
        name = "broken"

        def load(self, device="cpu", dtype=torch.float32) -> None:
            self._mark_loaded(device, dtype)

        def weights_info(self) -> WeightsInfo:
            return WeightsInfo("none", True)

        def _upscale(self, lr, steps, generator):
            return torch.full((lr.shape[0], 3, lr.shape[2] * 4, lr.shape[3] * 4), float("nan"))

    b = Broken()
    b.load()
    with pytest.raises(SRBenchError, match="NaN"):
        b.upscale(torch.rand(1, 3, 4, 4), steps=1)
