from __future__ import annotations

import subprocess
import sys

import pyro
import pyro.distributions as dist
import pytest
import torch
from _pairs import ChainModel, linear_gaussian

from guides import PriorGuide
from inference import check_bounds


def test_check_bounds_returns_quietly_on_a_users_correct_pair():
    pair = ChainModel(seed=5)
    x = pair.sample(10)
    report = check_bounds(pair.model, pair.guide, x, num_samples=(1, 10), particles_per_row=400)
    assert "IW_10 <= log p(x)" in report.checks
    assert report.exact is not None


def test_check_bounds_without_exact_value_checks_the_ordering_only():
    def model(x):  # three 1-D latents: no exact route
        with pyro.plate("data", x.shape[0]):
            codes = pyro.sample("codes", dist.Normal(x.new_zeros(3), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(codes.sum(-1, keepdim=True), 1.0).to_event(1), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("codes", dist.Normal(x.new_zeros(3), 1.0).to_event(1))

    report = check_bounds(
        model, guide, torch.randn(6, 1), num_samples=(1, 10), particles_per_row=200
    )
    assert report.exact is None
    assert report.checks == ("ELBO <= IW_1", "IW_1 <= IW_10")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"num_samples": (0,)}, "num_samples"),
        ({"particles_per_row": 0}, "particles_per_row"),
        ({"false_alarm_rate": 1.5}, "false_alarm_rate"),
    ],
)
def test_bad_options_are_named(options, message):
    model = linear_gaussian()
    with pytest.raises(ValueError, match=message):
        check_bounds(model, PriorGuide(model), model.sample(3), **options)


def test_strategies_import_without_hypothesis():
    code = (
        "import sys; sys.modules['hypothesis'] = None\n"
        "import inference.strategies as s\n"
        "try:\n    s.linear_gaussian_models()\nexcept ImportError:\n    print('needs hypothesis')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "needs hypothesis"
