import numpy as np
import pytest
import torch

from rollingdepth.method.coalign import build_problem, coalign, coalign_loss, merge_snippets
from rollingdepth.method.snippets import snippet_indices

from .conftest import GOLDEN_A


def renormalise(v):
    return (v - v.min()) / (v.max() - v.min()) * 2 - 1


@pytest.fixture(scope="module")
def golden():
    z = np.load(GOLDEN_A / "reference.npz")
    snippets = [z["snippets_0"][:, :, 0], z["snippets_1"][:, :, 0]]  # [S, n, H, W]
    return snippets, z["depth_coaligned"][:, 0]


@pytest.fixture(scope="module")
def golden_reference(golden):
    snippets, _ = golden
    return coalign(snippets, [1, 10], mode="reference")


def test_reference_mode_reproduces_golden_coalignment(golden, golden_reference):
    _, want = golden
    depth, info = golden_reference
    assert depth.shape == want.shape
    # on another CPU than the golden case's (other float kernels) the reference optimiser's 2000
    # L1/Adam steps turn rounding noise into ~2e-3 (measured 1.8e-3 here; the authors' own code
    # differs from its stored output by 1.5e-3 there), the sensitivity test_golden_depth documents
    assert np.abs(renormalise(depth) - want).max() < 5e-3
    assert info["iterations"] == 2000
    assert [s.shape for s in info["scales"]] == [(38,), (20,)]


def test_fast_mode_no_worse_than_reference(golden, golden_reference):
    """On the golden snippets (a random model: snippets nearly agree already) the reference
    optimiser ends above its own starting loss; fast keeps the best point it visits."""
    snippets, _ = golden
    ref_depth, ref_info = golden_reference
    depth, info = coalign(snippets, [1, 10], mode="fast")
    assert info["loss"] <= ref_info["loss"]
    # Bound: the reference optimiser itself moves its renormalised result by ~2e-3 when the
    # snippets get 1e-6 of noise (L1 loss + Adam's normalised steps); 1e-2 is 5x that.
    assert np.abs(renormalise(depth) - renormalise(ref_depth)).max() < 1e-2


def test_fast_mode_beats_reference_on_misaligned_snippets():
    """Snippets with real per-snippet scales and shifts: both solvers must move far."""
    snippets, _ = synthetic_snippets(30, [1, 5], [3, 3], seed=3, size=(44, 64))
    problem = build_problem(snippets, [1, 5])
    start = coalign_loss(problem, [np.ones(28), np.ones(20)], [np.zeros(28), np.zeros(20)])
    _, ref = coalign(snippets, [1, 5], mode="reference")
    _, fast = coalign(snippets, [1, 5], mode="fast")
    assert ref["loss"] < 0.8 * start
    assert fast["loss"] <= ref["loss"]


def test_reference_optimiser_amplifies_tiny_input_noise(golden, golden_reference):
    """Why the end-to-end golden test needs 5e-3: 1e-6 of snippet noise moves the reference
    optimiser's re-normalised result by far more than the noise itself."""
    snippets, _ = golden
    rng = np.random.default_rng(0)
    noisy = [s + rng.normal(0, 1e-6, s.shape).astype(np.float32) for s in snippets]
    depth, _ = coalign(noisy, [1, 10], mode="reference")
    moved = np.abs(renormalise(depth) - renormalise(golden_reference[0])).max()
    assert 1e-4 < moved < 5e-3


def test_compact_loss_equals_dense_loss(golden):
    snippets, _ = golden
    problem = build_problem(snippets, [1, 10])
    rng = np.random.default_rng(0)
    scales = [rng.uniform(0.5, 1.5, 38), rng.uniform(0.5, 1.5, 20)]
    shifts = [rng.normal(0, 0.1, 38), rng.normal(0, 0.1, 20)]
    compact = coalign_loss(problem, scales, shifts)
    dense = coalign_loss(problem, scales, shifts, dense=True)
    assert compact == pytest.approx(dense, rel=1e-5)


def synthetic_snippets(num_frames, dilations, lengths, seed=0, size=(24, 32)):
    """One smooth depth video, cut into snippets, each with its own scale and shift."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0 : size[0], 0 : size[1]] / 10.0
    video = np.stack([1.0 + 0.5 * np.sin(xx + 0.1 * i) * np.cos(yy) for i in range(num_frames)])
    groups = []
    for d, n in zip(dilations, lengths):
        starts = np.arange(num_frames - (n - 1) * d)
        idx = starts[:, None] + d * np.arange(n)[None]
        s = rng.uniform(0.5, 2.0, len(starts))[:, None, None, None]
        t = rng.normal(0, 0.3, len(starts))[:, None, None, None]
        groups.append((video[idx] * s + t + rng.normal(0, 0.01, (len(starts), n, *size))).astype(np.float32))
    return groups, video


@pytest.mark.parametrize("mode", ["fast", "reference"])
def test_mixed_snippet_lengths(mode):
    snippets, video = synthetic_snippets(20, [1, 4], [2, 3])
    depth, info = coalign(snippets, [1, 4], mode=mode)
    assert depth.shape == video.shape
    assert [s.shape[0] for s in info["scales"]] == [19, 12]
    problem = build_problem(snippets, [1, 4])
    start_loss = coalign_loss(problem, [np.ones(19), np.ones(12)], [np.zeros(19), np.zeros(12)])
    assert info["loss"] < 0.5 * start_loss
    # closer to the true video (up to one affine map) than the plain average of the snippets
    naive = merge_snippets(snippets, [1, 4], [np.ones(19), np.ones(12)], [np.zeros(19), np.zeros(12)], 0.0, 20)

    def affine_error(v):
        a = np.polyfit(v.ravel(), video.ravel(), 1)
        return np.abs(video - np.polyval(a, v)).mean()

    assert affine_error(depth) < 0.5 * affine_error(naive)


def test_fast_mode_never_builds_the_dense_layout(monkeypatch):
    import rollingdepth.method.coalign as module

    def forbidden(*args, **kwargs):
        raise AssertionError("fast mode built the dense [sum n, N, P] layout")

    monkeypatch.setattr(module, "_dense_terms", forbidden)
    snippets, _ = synthetic_snippets(30, [1, 5], [3, 3])
    depth, info = coalign(snippets, [1, 5], mode="fast")
    assert np.isfinite(depth).all() and np.isfinite(info["loss"])


def test_bad_arguments():
    snippets, _ = synthetic_snippets(10, [1], [3])
    with pytest.raises(ValueError, match="mode"):
        coalign(snippets, [1], mode="slow")
    with pytest.raises(ValueError, match="dilations"):
        coalign(snippets, [1, 2])
    with pytest.raises(ValueError, match="snippets"):
        coalign([], [])
    with pytest.raises(ValueError, match="snippets"):
        coalign([snippets[0][0]], [1])


def test_accepts_torch_tensors():
    snippets, _ = synthetic_snippets(8, [1], [3])
    d1, _ = coalign([torch.from_numpy(snippets[0])], [1], mode="fast")
    d2, _ = coalign(snippets, [1], mode="fast")
    np.testing.assert_allclose(d1, d2, atol=1e-6)


def test_problem_from_subsampled_in_place_shares_and_matches():
    from rollingdepth.method.coalign import problem_from_subsampled, solve

    rng = np.random.default_rng(3)
    subs = [rng.random((s, 3, 20)).astype(np.float32) + 0.5 for s in (8, 4)]  # 10 frames, dilations 1 and 3
    copies = [s.copy() for s in subs]
    expected = problem_from_subsampled(copies, [1, 3], 10, 0.25)
    shared = problem_from_subsampled(subs, [1, 3], 10, 0.25, inplace=True)
    for x, s in zip(shared.x, subs):
        assert np.shares_memory(x.numpy(), s)  # no second copy
    for a, b in zip(shared.x, expected.x):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    np.testing.assert_array_equal(solve(shared)[0][0], solve(expected)[0][0])


# ----------------------------------------------------------------------------- known misalignment
def misaligned_snippets(num_frames=24, dilations=(1, 5), n=3, size=(34, 54), seed=0, independent_shifts=False):
    """Snippets of a known depth video V, snippet k showing ``a_k * V + b_k``.

    ``a_k`` is drawn from [1/2, 1/1.4] or [1.4, 2] (every snippet 40% to 100% off in scale).
    By default ``b_k = -1 - a_k * min(V)``: every snippet is V scaled about one common point,
    with shifts between -2 and -1.25 that differ per snippet. That is the family the method's
    own loss can align exactly: after its global min shift (m = -1 here) each snippet is
    ``a_k * (V - min V)``, so scales alone align it and the shift penalty (10 mean t^2) costs
    nothing at the truth. ``independent_shifts``: ``b_k`` drawn on its own in +-[0.5, 1], which
    needs shifts the penalty fights (the method then trades some alignment for smaller shifts).
    Returns the snippets, V, and per group the arrays of a_k and b_k.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0 : size[0], 0 : size[1]] / 10.0
    video = np.stack([1.0 + 0.5 * np.sin(xx + 0.2 * i) * np.cos(yy - 0.1 * i) for i in range(num_frames)])
    groups, scales, shifts = [], [], []
    for d in dilations:
        idx = snippet_indices(num_frames, n, d)
        a = np.exp(rng.choice([-1.0, 1.0], len(idx)) * rng.uniform(np.log(1.4), np.log(2.0), len(idx)))
        if independent_shifts:
            b = rng.choice([-1.0, 1.0], len(idx)) * rng.uniform(0.5, 1.0, len(idx))
        else:
            b = -1.0 - a * video.min()
        groups.append((video[idx] * a[:, None, None, None] + b[:, None, None, None]).astype(np.float32))
        scales.append(a)
        shifts.append(b)
    return groups, video, scales, shifts


def affine_error(depth, video, reduce=np.max):
    """Max (or ``reduce``) of |V - (p * depth + q)| / range(V), with (p, q) the least-squares
    fit over the whole video: the error left after the one global affine map the method
    cannot know."""
    p, q = np.polyfit(depth.ravel().astype(np.float64), video.ravel(), 1)
    return reduce(np.abs(video - (p * depth + q))) / (video.max() - video.min())


def no_alignment(snippets, dilations, num_frames):
    """The merge with every scale 1 and shift 0 (what the output would be without co-alignment)."""
    ones = [np.ones(len(s)) for s in snippets]
    zeros = [np.zeros(len(s)) for s in snippets]
    problem = build_problem(snippets, dilations)
    depth = merge_snippets(snippets, dilations, ones, zeros, problem.min_value, num_frames)
    return depth, coalign_loss(problem, ones, zeros)


@pytest.mark.parametrize("mode", ["fast", "reference"])
def test_recovers_known_misalignment(mode):
    """Both solvers undo per-snippet scales 1.4x to 2x off and shifts of -1.25 to -2.

    Compared: (1) each snippet's combined map after co-alignment, ``s_k * a_k`` (scale) and
    ``s_k * (b_k - m) + t_k`` (offset), must be the same for every snippet: within 3% of
    their median (offsets: of the median scale times range(V)); (2) the merged video must be
    V up to one global affine map, within 2% of V's range, and at least 10x closer than the
    merge without alignment (which is about 50% off); (3) the loss must fall below a tenth
    of the loss at s = 1, t = 0.
    """
    dilations = [1, 5]
    snippets, video, a, b = misaligned_snippets()
    naive, start_loss = no_alignment(snippets, dilations, len(video))
    depth, info = coalign(snippets, dilations, mode=mode)
    m = info["min_value"]
    assert m == pytest.approx(-1.0, abs=1e-6)  # the construction's common point is the global minimum
    scale = np.concatenate([s * ak for s, ak in zip(info["scales"], a)])
    offset = np.concatenate([s * (bk - m) + t for s, bk, t in zip(info["scales"], b, info["shifts"])])
    c = np.median(scale)
    assert np.abs(scale / c - 1).max() < 0.03
    assert np.abs(offset - np.median(offset)).max() < 0.03 * c * (video.max() - video.min())
    error, error_naive = affine_error(depth, video), affine_error(naive, video)
    assert error < 0.02
    assert error < 0.1 * error_naive
    assert info["loss"] < 0.1 * start_loss


@pytest.mark.parametrize("mode", ["fast", "reference"])
def test_independent_shifts_still_far_better_than_no_alignment(mode):
    """Shifts drawn independently of the scales (+-0.5 to 1): the shift penalty keeps the
    method from aligning exactly (see ``misaligned_snippets``), but the merged video's mean
    distance to V (up to one global affine map) must stay below 0.4 times that of the merge
    without alignment, and the loss below half the loss at s = 1, t = 0."""
    dilations = [1, 5]
    snippets, video, _, _ = misaligned_snippets(seed=1, independent_shifts=True)
    naive, start_loss = no_alignment(snippets, dilations, len(video))
    depth, info = coalign(snippets, dilations, mode=mode)
    assert affine_error(depth, video, np.mean) < 0.4 * affine_error(naive, video, np.mean)
    assert info["loss"] < 0.5 * start_loss


def static_snippets(num_frames=20, dilations=(1, 4), n=3, size=(44, 64), noise=1e-4, seed=0):
    """A static scene: every snippet the same map plus tiny noise (near-zero residuals)."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(-1, 1, size).astype(np.float32)
    groups = []
    for d in dilations:
        s = len(snippet_indices(num_frames, n, d))
        groups.append(base + rng.normal(0, noise, (s, n, *size)).astype(np.float32))
    return groups


@pytest.mark.parametrize("mode", ["fast", "reference"])
@pytest.mark.parametrize("before", [False, True])
def test_solve_flushes_denormals_and_restores_the_setting(monkeypatch, mode, before):
    """During the solve and the merge subnormals are flushed; afterwards the caller's setting is
    back; the result equals that of a solve without flushing (to float32 tolerance)."""
    import rollingdepth.method.coalign as ca
    from rollingdepth.method.device import denormals_flushed

    snippets = static_snippets()
    seen = []

    def spy(name):
        original = getattr(ca, name)
        monkeypatch.setattr(ca, name, lambda *a, **k: seen.append(denormals_flushed()) or original(*a, **k))

    spy("_solve_fast" if mode == "fast" else "_solve_reference")
    torch.set_flush_denormal(before)
    try:
        depth, info = coalign(snippets, [1, 4], mode=mode, iterations=20)
        assert denormals_flushed() == before
        assert seen == [True]
        spy("_as_tensor")  # called by the merge, within its flushed block
        merge_snippets(snippets, [1, 4], info["scales"], info["shifts"], info["min_value"], 20)
        assert denormals_flushed() == before
        assert len(seen) > 1 and all(seen)
        monkeypatch.setattr(ca, "FLUSH_DENORMALS", False)
        torch.set_flush_denormal(False)
        plain, plain_info = coalign(snippets, [1, 4], mode=mode, iterations=20)
        assert not denormals_flushed()
    finally:
        torch.set_flush_denormal(False)
    np.testing.assert_allclose(depth, plain, atol=1e-5)
    assert info["loss"] == pytest.approx(plain_info["loss"], rel=1e-4, abs=1e-7)
