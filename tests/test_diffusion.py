"""Noise schedule, forward noising, reverse step (Eq. 1) and classifier-free guidance (Eq. 2)."""
from __future__ import annotations

import math

import pytest
import torch

from adept.diffusion import (DiffusionSchedule, cosine_beta_schedule, guidance_eq2_weight, guided_eps,
                             timestep_embedding)


def closed_form_alpha_bar(k: int, num_steps: int, s: float) -> float:
    f = lambda t: math.cos((t / num_steps + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    return f(k) / f(0)


@pytest.mark.parametrize("num_steps", [5, 10, 20])
def test_cosine_schedule_matches_closed_form(num_steps):
    s = 1e-4
    betas = cosine_beta_schedule(num_steps, s)
    assert betas.shape == (num_steps,)
    alpha_bar = torch.cumprod(1 - betas, 0)
    for k in range(1, num_steps):  # every step but the last is unclipped
        assert alpha_bar[k - 1].item() == pytest.approx(closed_form_alpha_bar(k, num_steps, s), rel=1e-9)
    assert betas[-1].item() == pytest.approx(0.999)  # the closed form's beta_K ~ 1 is clipped
    assert (betas[:-1] < 0.999).all() and (betas > 0).all()
    assert torch.all(betas[1:] >= betas[:-1])


def test_schedule_buffers_follow_paper_indexing():
    schedule = DiffusionSchedule(10, 1e-4)
    betas = cosine_beta_schedule(10, 1e-4)
    # index 0 = clean data, index k = the paper's k
    assert schedule.alpha_bar[0] == 1.0 and schedule.betas[0] == 0.0
    torch.testing.assert_close(schedule.betas[1:], betas.float())
    torch.testing.assert_close(schedule.alpha_bar[1:], torch.cumprod(1 - betas, 0).float())
    k = 4
    expected_var = betas[k - 1] * (1 - schedule.alpha_bar[k - 1].double()) / (1 - schedule.alpha_bar[k].double())
    assert schedule.posterior_variance[k].item() == pytest.approx(expected_var.item(), rel=1e-5)
    assert schedule.posterior_variance[1] == 0.0  # the last reverse step adds no noise
    assert torch.isfinite(torch.stack([b for _, b in schedule.named_buffers()])).all()


def test_q_sample_formula_and_step_range():
    schedule = DiffusionSchedule(10)
    x0, noise = torch.randn(6, 3), torch.randn(6, 3)
    k = torch.tensor([1, 2, 3, 8, 9, 10])
    ab = torch.tensor([closed_form_alpha_bar(int(i), 10, 1e-4) for i in k[:-1]] + [schedule.alpha_bar[10].item()])
    expected = ab.sqrt().unsqueeze(-1).float() * x0 + (1 - ab).sqrt().unsqueeze(-1).float() * noise
    torch.testing.assert_close(schedule.q_sample(x0, k, noise), expected)
    steps = schedule.sample_steps(10_000, torch.device("cpu"), torch.Generator().manual_seed(0))
    assert steps.min() == 1 and steps.max() == 10


def test_reverse_step_x0_form_equals_eq1_when_nothing_is_clamped():
    schedule = DiffusionSchedule(10)
    x, eps = torch.randn(64, 5), torch.randn(64, 5)
    wide = (torch.full((5,), -1e9), torch.full((5,), 1e9))
    for k in (2, 5, 10):
        literal = schedule.reverse_step(x, k, eps, torch.Generator().manual_seed(k))
        clamped_form = schedule.reverse_step(x, k, eps, torch.Generator().manual_seed(k), wide)
        torch.testing.assert_close(literal, clamped_form, rtol=1e-4, atol=1e-4)


def test_reverse_step_with_bounds_keeps_final_sample_in_range():
    schedule = DiffusionSchedule(10)
    low, high = torch.tensor([-0.5, 0.0]), torch.tensor([0.5, 0.1])
    x = schedule.sample(lambda x, k, c, m: torch.randn_like(x) * 5, torch.zeros(500, 1), 2, 1.0,
                        torch.Generator().manual_seed(0), (low, high))
    assert (x >= low - 1e-6).all() and (x <= high + 1e-6).all()


def test_sampler_can_leave_the_last_step_unclamped():
    """The last step returns x0_hat itself, so clamping it clips the sample; clamp_last_step=False clamps
    steps K..2 only (the same chain until then) and returns the unclamped x0_hat of step 1."""
    schedule = DiffusionSchedule(10)
    assert schedule.posterior_x0_coef[1] == pytest.approx(1.0) and schedule.posterior_xk_coef[1] == 0.0
    low, high = torch.tensor([-0.5, 0.0]), torch.tensor([0.5, 0.1])
    def noisy(x, k, condition, mask):  # a bad denoiser, the same at every call for a given step
        return 5 * torch.randn(x.shape, generator=torch.Generator().manual_seed(int(k[0])))
    x = schedule.sample(noisy, torch.zeros(500, 1), 2, 1.0, torch.Generator().manual_seed(0), (low, high),
                        clamp_last_step=False)
    assert ((x < low) | (x > high)).any()
    generator = torch.Generator().manual_seed(0)
    manual = torch.randn(500, 2, generator=generator)
    for k in range(10, 0, -1):
        eps = noisy(manual, torch.full((500,), k), None, None)
        manual = schedule.reverse_step(manual, k, eps, generator, (low, high) if k > 1 else None)
    torch.testing.assert_close(x, manual, rtol=0, atol=0)


def test_sampler_with_oracle_denoiser_matches_exact_linear_gaussian_chain():
    """For Gaussian data the optimal eps is linear in x_k, so the K-step chain of Eq. (1) is linear-Gaussian
    and its final mean/variance follow from a recursion computed here independently of the sampler."""
    num_steps, mu, sigma = 10, torch.tensor([2.0, -1.0]), torch.tensor([0.5, 1.0])
    schedule = DiffusionSchedule(num_steps)

    def oracle(x, k, condition, mask):  # E[eps | x_k] for x_0 ~ N(mu, sigma^2)
        ab = schedule.alpha_bar[k].unsqueeze(-1)
        return (1 - ab).sqrt() * (x - ab.sqrt() * mu) / (ab * sigma**2 + 1 - ab)

    samples = schedule.sample(oracle, torch.zeros(200_000, 1), 2, 1.0, torch.Generator().manual_seed(0))
    betas = [0.0] + cosine_beta_schedule(num_steps).tolist()
    ab = [1.0]
    for beta in betas[1:]:
        ab.append(ab[-1] * (1 - beta))
    mean, var = torch.zeros(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64)
    mu64, sigma64 = mu.double(), sigma.double()
    for k in range(num_steps, 0, -1):  # x_{k-1} = (x_k - c_k eps(x_k)) / sqrt(alpha_k) + std_k z, Eq. (1)
        c = betas[k] / math.sqrt(1 - ab[k])
        slope = math.sqrt(1 - ab[k]) / (ab[k] * sigma64**2 + 1 - ab[k])
        a = (1 - c * slope) / math.sqrt(1 - betas[k])
        b = c * slope * math.sqrt(ab[k]) * mu64 / math.sqrt(1 - betas[k])
        post_var = betas[k] * (1 - ab[k - 1]) / (1 - ab[k])
        mean, var = a * mean + b, a**2 * var + post_var
    torch.testing.assert_close(samples.mean(0).double(), mean, atol=0.01, rtol=0)
    torch.testing.assert_close(samples.var(0).double(), var, atol=0, rtol=0.02)


def test_guided_eps_is_eq2_in_one_batched_call():
    torch.manual_seed(0)
    net = torch.nn.Linear(3 + 2 + 1 + 1, 3)
    calls = []

    def denoiser(x, k, condition, mask):
        calls.append(x.shape[0])
        return net(torch.cat([x, condition * mask, mask, k.float().unsqueeze(-1)], -1))

    x, k, condition = torch.randn(8, 3), torch.full((8,), 3), torch.randn(8, 2)
    ones, zeros = torch.ones(8, 1), torch.zeros(8, 1)
    eps_c, eps_u = denoiser(x, k, condition, ones), denoiser(x, k, condition, zeros)
    calls.clear()
    for w in (0.1, 0.5, 2.0):
        torch.testing.assert_close(guided_eps(denoiser, x, k, condition, w), eps_u + w * (eps_c - eps_u))
    assert calls == [16, 16, 16]  # conditional + unconditional in one call on a doubled batch
    torch.testing.assert_close(guided_eps(denoiser, x, k, condition, 1.0), eps_c)
    torch.testing.assert_close(guided_eps(denoiser, x, k, condition, 0.0), eps_u)


def test_guidance_conventions_and_embedding():
    assert guidance_eq2_weight(0.1, "eq2") == 0.1
    assert guidance_eq2_weight(0.1, "ho_salimans") == pytest.approx(1.1)
    with pytest.raises(ValueError, match="guidance convention"):
        guidance_eq2_weight(0.1, "other")
    emb = timestep_embedding(torch.arange(1, 11), 32)
    assert emb.shape == (10, 32) and len({tuple(row.tolist()) for row in emb}) == 10
    with pytest.raises(ValueError, match="even"):
        timestep_embedding(torch.arange(3), 7)
    with pytest.raises(ValueError, match="diffusion steps"):
        cosine_beta_schedule(0)
