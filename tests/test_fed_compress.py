"""Update compression: unbiased quantization, top-k with error feedback, exact byte counts."""

from __future__ import annotations

import math

import numpy as np
import pytest

from npgru.fed.compress import ErrorFeedback, make_compressor, quantize, top_k


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(0).uniform(-1, 1, 1001).astype(np.float32)


@pytest.mark.parametrize("bits", [8, 4, 2])
def test_quantization_is_unbiased(x, bits):
    n = 2000
    mean = np.mean([quantize(x, bits, np.random.default_rng([1, i])).decode() for i in range(n)], axis=0)
    step = float(quantize(x, bits, np.random.default_rng(0)).step)
    # each draw is off by at most one step, with standard deviation at most step / 2
    assert np.abs(mean - x).max() < 5 * (step / 2) / math.sqrt(n)


@pytest.mark.parametrize("bits", [8, 4, 2])
def test_quantization_error_within_one_step_and_bytes(x, bits):
    q = quantize(x, bits, np.random.default_rng(0))
    assert np.abs(q.decode() - x).max() <= q.step * (1 + 1e-5)
    assert q.decode().min() == pytest.approx(x.min()) and q.decode().max() == pytest.approx(x.max())
    assert q.nbytes == math.ceil(x.size * bits / 8) + 8
    assert quantize(x, bits, np.random.default_rng(0)).codes.tobytes() == q.codes.tobytes()


def test_quantization_edge_cases():
    const = quantize(np.full(5, 0.25, dtype=np.float32), 2, np.random.default_rng(0))
    np.testing.assert_array_equal(const.decode(), np.full(5, 0.25, dtype=np.float32))
    assert quantize(np.zeros(0, dtype=np.float32), 8, np.random.default_rng(0)).decode().size == 0


def test_top_k_keeps_the_largest_and_counts_bytes(x):
    s = top_k(x, 0.01)
    k = math.ceil(0.01 * x.size)
    assert s.indices.size == k and s.nbytes == 8 * k
    dense = s.decode()
    assert np.count_nonzero(dense) == k
    assert np.abs(x[s.indices]).min() >= np.sort(np.abs(x))[-k]
    np.testing.assert_array_equal(dense[s.indices], x[s.indices])
    np.testing.assert_array_equal(top_k(x, 1.0).decode(), x)


def _fedavg_on_quadratics(eta, compress, rounds):
    """One local GD step per round on f_k(θ) = ½‖θ − c_k‖²; the optimum of the mean is mean(c)."""
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 1, (4, 10))
    theta = np.zeros(10)
    for _ in range(rounds):
        deltas = [(eta * (c - theta)).astype(np.float32) for c in centers]
        theta = theta + np.mean([compress(k, d, rng).decode() for k, d in enumerate(deltas)], axis=0)
    return np.linalg.norm(theta - centers.mean(axis=0))


def test_error_feedback_removes_the_bias_of_top_k():
    topk = make_compressor("topk:0.2")
    for eta in (0.1, 0.01):
        plain = _fedavg_on_quadratics(eta, lambda k, d, rng: topk(d, rng), rounds=int(30 / eta))
        ef = _fedavg_on_quadratics(eta, ErrorFeedback(topk), rounds=int(30 / eta))
        assert plain > 0.5  # stuck where the clients' top coordinates cancel, at any step size
        assert ef < 2 * eta  # error feedback: only an O(step) residual is in flight
    ef_memory = ErrorFeedback(topk)
    ef_memory(3, np.arange(10, dtype=np.float32), np.random.default_rng(0))
    np.testing.assert_array_equal(ef_memory.memory[3], np.r_[np.arange(8), 0, 0])


@pytest.mark.parametrize("spec", ["q16", "q3", "topk:0", "topk:1.5", "topk:abc", "gzip"])
def test_bad_compression_specs(spec):
    with pytest.raises(ValueError, match="q8, q4, q2|fraction"):
        make_compressor(spec)


def test_bad_inputs(x):
    with pytest.raises(ValueError, match="bits must be one of"):
        quantize(x, 3, np.random.default_rng(0))
    with pytest.raises(ValueError, match="fraction"):
        top_k(x, 0.0)
    with pytest.raises(ValueError, match="NaN"):
        quantize(np.array([np.nan, 1.0]), 8, np.random.default_rng(0))
    with pytest.raises(TypeError, match="1-D float"):
        top_k(np.ones((2, 2)), 0.5)
