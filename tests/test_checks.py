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


# --- No false alarms where the old oracle or a zero sample variance misled check_bounds ---


def _far_model(x):
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(torch.tensor(0.0, dtype=torch.float64), 1.0))
        pyro.sample("x", dist.Normal(z, 0.5), obs=x[:, 0])


def _far_exact_posterior(x):  # z given x ~ N(x / 1.25, 0.25 / 1.25)
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(x[:, 0] / 1.25, (0.25 / 1.25) ** 0.5))


def test_check_bounds_passes_the_exact_posterior_of_a_posterior_far_from_the_prior():
    x = torch.tensor([[20.0], [-12.0], [0.5]], dtype=torch.float64)
    report = check_bounds(_far_model, _far_exact_posterior, x, num_samples=(1, 10))
    assert "tight where the weights have zero variance" in report.checks
    torch.testing.assert_close(
        report.exact, dist.Normal(0.0, 1.25**0.5).log_prob(x[:, 0]), rtol=0, atol=1e-6
    )


def _two_mode_model(x):  # x ~ N((z0^2, z1), 0.1^2 I): two modes at z0 = +-sqrt(x0)
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(torch.zeros(2, dtype=torch.float64), 1.0).to_event(1))
        loc = torch.stack([z[..., 0] ** 2, z[..., 1]], dim=-1)
        pyro.sample("x", dist.Normal(loc, 0.1).to_event(1), obs=x)


def _broad_guide(x):
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(torch.zeros(2, dtype=torch.float64), 1.5).to_event(1))


def test_check_bounds_passes_a_broad_proposal_on_a_two_mode_posterior():
    x = torch.tensor([[1.0, 0.3], [2.0, -1.0]], dtype=torch.float64)
    check_bounds(_two_mode_model, _broad_guide, x, num_samples=(1, 1000), particles_per_row=4000)


def _mixture_and_posterior():
    from lvm_models import GaussianMixture

    mixture = GaussianMixture.from_params(
        torch.tensor([0.5, 0.0, -0.5], dtype=torch.float64),
        torch.tensor([[-4.0, 0.0], [0.0, 3.0], [4.0, 0.0]], dtype=torch.float64),
        torch.full((3, 2), 0.8, dtype=torch.float64),
    )

    def posterior_probs(x):
        components = dist.Normal(mixture.means, mixture.scales).to_event(1)
        log_joint = torch.log_softmax(mixture.logits, -1) + components.log_prob(x.unsqueeze(-2))
        return torch.softmax(log_joint, -1)  # (N, K)

    return mixture, posterior_probs


def _categorical_guide(probs_of, power: float = 1.0, log_prob_shift: float = 0.0):
    """q(z given x) proportional to p(z given x)^power; log_prob_shift breaks its density."""

    class Shifted(dist.Categorical):
        def log_prob(self, value):
            return super().log_prob(value) + log_prob_shift

    def guide(x):
        probs = probs_of(x) ** power
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", Shifted(probs / probs.sum(-1, keepdim=True)))

    return guide


@pytest.mark.parametrize("seed", range(20))
def test_check_bounds_passes_a_confident_correct_mixture_guide_on_every_seed(seed):
    mixture, posterior = _mixture_and_posterior()
    x = mixture.sample(12)
    for power in (1.0, 0.8):  # the exact posterior, and a flatter but confident one
        check_bounds(
            mixture, _categorical_guide(posterior, power), x, num_samples=(1, 10), seed=seed
        )


def test_check_bounds_still_fails_a_mixture_guide_whose_density_is_wrong():
    mixture, posterior = _mixture_and_posterior()
    x = mixture.sample(12)
    with pytest.raises(AssertionError, match=r"<= log p\(x\)"):
        check_bounds(
            mixture, _categorical_guide(posterior, log_prob_shift=-0.05), x, num_samples=(1, 10)
        )


@pytest.mark.parametrize("seed", range(5))
def test_diagnose_gap_of_a_confident_correct_mixture_guide_is_not_negative(seed):
    from inference import diagnose

    mixture, posterior = _mixture_and_posterior()
    x = mixture.sample(12)
    for power in (1.0, 0.8):
        gap = diagnose(mixture, _categorical_guide(posterior, power), x, seed=seed).gap
        assert gap >= -1e-9  # KL(q || posterior) >= 0; the exact posterior gives 0


def test_check_bounds_with_seed_none_draws_from_the_callers_rng():
    model = linear_gaussian()
    x = model.sample(4)
    torch.manual_seed(0)
    first = check_bounds(model, PriorGuide(model), x, num_samples=(1, 4), seed=None)
    torch.manual_seed(0)
    again = check_bounds(model, PriorGuide(model), x, num_samples=(1, 4), seed=None)
    assert torch.equal(first.elbo.per_point, again.elbo.per_point)
