"""Values of every loss on tiny hand-made tensors, checked against formulas written out in numpy.

The expected values never come from dualist's own code: each is written out from the formula in
docs/architecture.md §3 (or by hand), so a wrong implementation cannot agree with itself.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dualist.losses import (
    LOSSES,
    M3SELoss,
    MarginMSELoss,
    OneHotCELoss,
    RankDistilLoss,
    ScoreMSELoss,
    SoftmaxKLLoss,
    build_loss,
)


def t(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


def np_log_softmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x - np.log(np.exp(x - x.max()).sum()) - x.max()


S_2x4 = [[1.0, 0.5, -0.5, 2.0], [0.0, 1.0, 0.3, -1.0]]
T_2x4 = [[3.0, 1.0, 2.0, -1.0], [2.0, 2.5, 0.0, 1.0]]


# --- onehot ------------------------------------------------------------------------------------

def test_onehot_1x3_by_hand():
    loss = OneHotCELoss()(t([[1.0, 2.0, 3.0]]))
    expected = -math.log(math.e / (math.e + math.e**2 + math.e**3))
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_onehot_2x4_is_mean_of_rows():
    expected = np.mean([-np_log_softmax(row)[0] for row in S_2x4])
    assert OneHotCELoss()(t(S_2x4)).item() == pytest.approx(expected, rel=1e-6)


def test_onehot_multi_positive_excludes_other_positives_from_denominator():
    s = [2.0, 1.0, 0.0, 0.5]
    labels = torch.tensor([[True, True, False, False]])
    e = np.exp(s)
    expected = np.mean([-np.log(e[0] / (e[0] + e[2] + e[3])), -np.log(e[1] / (e[1] + e[2] + e[3]))])
    all_in_denominator = np.mean([-np.log(e[0] / e.sum()), -np.log(e[1] / e.sum())])
    loss = OneHotCELoss()(t([s]), labels=labels).item()
    assert loss == pytest.approx(expected, rel=1e-6)
    assert loss != pytest.approx(all_in_denominator, rel=1e-3)


def test_onehot_labels_on_column_0_agree_with_default():
    labels = torch.zeros(2, 4, dtype=torch.bool)
    labels[:, 0] = True
    loss = OneHotCELoss()
    assert loss(t(S_2x4), labels=labels).item() == pytest.approx(loss(t(S_2x4)).item(), rel=1e-7)


def test_onehot_positive_elsewhere_equals_moving_it_to_column_0():
    s = t(S_2x4)
    labels = torch.zeros(2, 4, dtype=torch.bool)
    labels[0, 2] = labels[1, 3] = True
    moved = torch.stack([s[0, [2, 0, 1, 3]], s[1, [3, 0, 1, 2]]])
    assert OneHotCELoss()(s, labels=labels).item() == pytest.approx(OneHotCELoss()(moved).item(),
                                                                   rel=1e-6)


def test_onehot_ignores_teacher():
    s = t(S_2x4)
    assert OneHotCELoss()(s, t(T_2x4)).item() == OneHotCELoss()(s).item()


# --- mse ---------------------------------------------------------------------------------------

def test_mse_1x3_by_hand():
    # (1 - 1.5)^2 + (2 - 2)^2 + (3 - 1)^2 = 0.25 + 0 + 4
    assert ScoreMSELoss()(t([[1.0, 2.0, 3.0]]), t([[1.5, 2.0, 1.0]])).item() == pytest.approx(4.25)


def test_mse_2x4_sums_over_candidates_and_averages_over_queries():
    diff = np.array(S_2x4) - np.array(T_2x4)
    expected = (diff**2).sum(axis=1).mean()
    assert ScoreMSELoss()(t(S_2x4), t(T_2x4)).item() == pytest.approx(expected, rel=1e-6)


def test_mse_is_not_shift_invariant():
    s, te = t(S_2x4), t(T_2x4)
    assert ScoreMSELoss()(s + 1.0, te).item() != pytest.approx(ScoreMSELoss()(s, te).item())


# --- margin_mse --------------------------------------------------------------------------------

def test_margin_mse_1x3_by_hand():
    # student margins 2-1=1, 2-0=2; teacher margins 3-1=2, 3-0.5=2.5 -> ((1-2)^2 + (2-2.5)^2) / 2
    loss = MarginMSELoss()(t([[2.0, 1.0, 0.0]]), t([[3.0, 1.0, 0.5]]))
    assert loss.item() == pytest.approx(0.625)


def test_margin_mse_2x4():
    s, te = np.array(S_2x4), np.array(T_2x4)
    per_row = [np.mean([((s[b, 0] - s[b, j]) - (te[b, 0] - te[b, j])) ** 2 for j in (1, 2, 3)])
               for b in range(2)]
    assert MarginMSELoss()(t(S_2x4), t(T_2x4)).item() == pytest.approx(np.mean(per_row), rel=1e-6)


def test_margin_mse_with_two_columns_is_hofstatter_triplet_loss():
    s, te = t([[1.0, 0.2], [0.3, 0.9]]), t([[2.0, 0.5], [1.0, 1.2]])
    expected = np.mean([((1.0 - 0.2) - (2.0 - 0.5)) ** 2, ((0.3 - 0.9) - (1.0 - 1.2)) ** 2])
    assert MarginMSELoss()(s, te).item() == pytest.approx(expected, rel=1e-6)


def test_margin_mse_multi_positive_averages_over_all_pairs():
    s, te = [0.0, 2.0, 1.0, 3.0], [1.0, 3.0, 0.0, 2.0]
    labels = torch.tensor([[False, True, False, True]])  # P = {1, 3}, N = {0, 2}
    pairs = [(i, j) for i in (1, 3) for j in (0, 2)]
    expected = np.mean([((s[i] - s[j]) - (te[i] - te[j])) ** 2 for i, j in pairs])
    assert MarginMSELoss()(t([s]), t([te]), labels).item() == pytest.approx(expected, rel=1e-6)


def test_margin_mse_is_invariant_to_per_query_shifts():
    s, te = t(S_2x4), t(T_2x4)
    shift = t([[5.0], [-3.0]])
    base = MarginMSELoss()(s, te).item()
    assert base > 0
    assert MarginMSELoss()(s + shift, te).item() == pytest.approx(base, rel=1e-5)
    assert MarginMSELoss()(s, te + shift).item() == pytest.approx(base, rel=1e-5)


# --- kl ----------------------------------------------------------------------------------------

def np_kl(s, te, temperature):
    log_p, log_q = np_log_softmax(np.array(te) / temperature), np_log_softmax(np.array(s) / temperature)
    return temperature**2 * float((np.exp(log_p) * (log_p - log_q)).sum())


def test_kl_is_zero_when_student_equals_teacher():
    assert SoftmaxKLLoss()(t(T_2x4), t(T_2x4)).item() == pytest.approx(0.0, abs=1e-7)
    # ...and when they differ by a per-query constant (softmax is shift-invariant).
    assert SoftmaxKLLoss()(t(T_2x4) + t([[1.0], [-2.0]]), t(T_2x4)).item() == pytest.approx(0.0, abs=1e-6)


def test_kl_1x3_by_hand():
    s, te = [2.0, 1.0, 0.0], [3.0, 1.0, 0.5]
    p = np.exp(te) / np.exp(te).sum()
    q = np.exp(s) / np.exp(s).sum()
    expected = float((p * np.log(p / q)).sum())
    assert SoftmaxKLLoss()(t([s]), t([te])).item() == pytest.approx(expected, rel=1e-5)


def test_kl_2x4_with_temperature():
    expected = np.mean([np_kl(s, te, 2.0) for s, te in zip(S_2x4, T_2x4)])
    assert SoftmaxKLLoss(temperature=2.0)(t(S_2x4), t(T_2x4)).item() == pytest.approx(expected, rel=1e-5)


def test_kl_temperature_scaling_identity():
    # T^2 KL(softmax(t/T) || softmax(s/T)) equals T^2 times the T=1 loss on scores divided by T.
    s, te, temperature = t(S_2x4), t(T_2x4), 3.0
    scaled = SoftmaxKLLoss(temperature=temperature)(s, te).item()
    unit = SoftmaxKLLoss()(s / temperature, te / temperature).item()
    assert scaled == pytest.approx(temperature**2 * unit, rel=1e-5)
    assert scaled != pytest.approx(SoftmaxKLLoss()(s, te).item(), rel=1e-2)


# --- rankdistil --------------------------------------------------------------------------------

def np_pl_nll(s, order, k):
    s = np.asarray(s, dtype=np.float64)
    return -sum(s[order[r]] - np.log(np.exp(s[order[r:]]).sum()) for r in range(k))


def test_rankdistil_k1_with_confident_teacher_is_softmax_ce_on_teachers_top():
    s = [0.3, -0.2, 1.1, 0.0]
    teacher = t([[0.0, 0.0, 100.0, 0.0]])  # item a = 2, with overwhelming probability
    loss = RankDistilLoss(k=1, num_samples=4, seed=0)(t([s]), teacher)
    assert loss.item() == pytest.approx(-np_log_softmax(s)[2], rel=1e-5)


def test_rankdistil_full_ordering_by_hand():
    s = [[1.0, 0.0, -1.0], [0.5, 2.0, 0.0]]
    teacher = t([[30.0, 20.0, 0.0], [0.0, 60.0, 30.0]])  # orders (0, 1, 2) and (1, 2, 0)
    expected = np.mean([np_pl_nll(s[0], [0, 1, 2], 3), np_pl_nll(s[1], [1, 2, 0], 3)])
    assert RankDistilLoss(seed=1)(t(s), teacher).item() == pytest.approx(expected, rel=1e-5)
    # The last factor of a full ordering is 1, so k = C - 1 gives the same value.
    assert RankDistilLoss(k=2, seed=1)(t(s), teacher).item() == pytest.approx(expected, rel=1e-5)


def test_rankdistil_top_k_scores_only_the_prefix():
    s = [1.0, 0.0, -1.0, 0.5]
    teacher = t([[40.0, 0.0, 20.0, 60.0]])  # order (3, 0, 2, 1)
    expected = np_pl_nll(s, [3, 0, 2, 1], 2)
    assert RankDistilLoss(k=2, seed=0)(t([s]), teacher).item() == pytest.approx(expected, rel=1e-5)


def test_rankdistil_is_deterministic_under_a_seed():
    torch.manual_seed(123)
    s, teacher = torch.randn(3, 6), torch.zeros(3, 6)  # uniform teacher: every order is likely
    a = RankDistilLoss(num_samples=2, seed=7)
    b = RankDistilLoss(num_samples=2, seed=7)
    first = [a(s, teacher).item() for _ in range(3)]
    assert first == [b(s, teacher).item() for _ in range(3)]
    assert len(set(first)) > 1  # successive calls draw fresh orderings
    assert RankDistilLoss(num_samples=2, seed=8)(s, teacher).item() != first[0]


def test_rankdistil_generator_argument_is_used():
    s, teacher = torch.randn(3, 6, generator=torch.Generator().manual_seed(0)), torch.zeros(3, 6)
    a = RankDistilLoss(generator=torch.Generator().manual_seed(5))(s, teacher).item()
    b = RankDistilLoss(generator=torch.Generator().manual_seed(5))(s, teacher).item()
    assert a == b


def test_rankdistil_samples_first_item_from_teacher_softmax():
    # Gumbel trick: the first item of a sampled ordering is distributed as softmax(t / T).
    probs = np.array([0.5, 0.3, 0.15, 0.05])
    temperature = 2.0
    teacher = t([list(np.log(probs) * temperature)])
    loss = RankDistilLoss(num_samples=20000, temperature=temperature, seed=0)
    first = loss.sample_orderings(teacher)[0, :, 0].numpy()
    freq = np.bincount(first, minlength=4) / first.size
    np.testing.assert_allclose(freq, probs, atol=0.015)


def test_rankdistil_k1_estimates_softmax_ce():
    # E_{a ~ softmax(t)}[-log softmax(s)[a]] = KL(softmax(t) || softmax(s)) + H(softmax(t))
    s, te = [0.5, -0.5, 1.0], [1.0, 0.0, 0.5]
    p = np.exp(np_log_softmax(te))
    expected = float(-(p * np_log_softmax(s)).sum())
    loss = RankDistilLoss(k=1, num_samples=40000, seed=0)(t([s]), t([te])).item()
    assert loss == pytest.approx(expected, abs=0.02)


# --- m3se --------------------------------------------------------------------------------------

def test_m3se_1x3_by_hand():
    # j* = 1 (teacher 1.0 > 0.0); margin ((3 - 1) - (2 - 0.5))^2 = 0.25; hinge max(0, 1 - 0.5)^2 = 0.25
    assert M3SELoss()(t([[2.0, 0.5, 1.0]]), t([[3.0, 1.0, 0.0]])).item() == pytest.approx(0.5)


def test_m3se_picks_teachers_hardest_negative_not_students():
    s, te = [3.0, 2.0, 0.5, 1.0], [4.0, 1.0, 2.0, 0.0]
    # Teacher's hardest negative is column 2; the student's would be column 1.
    # margin: ((4 - 2) - (3 - 0.5))^2 = 0.25; hinge: (2 - 0.5)^2 + 0 + (1 - 0.5)^2 = 2.5
    students_choice = ((4 - 1) - (3 - 2)) ** 2 + 0 + 0 + 0  # = 4, with j* = 1
    loss = M3SELoss()(t([s]), t([te])).item()
    assert loss == pytest.approx(2.75)
    assert loss != pytest.approx(students_choice)


def test_m3se_hinge_inactive_when_other_negatives_are_below_j_star():
    s, te = [3.0, 1.0, 0.2, -1.0], [4.0, 2.5, 0.0, 1.0]  # j* = 1; student negatives 0.2, -1 < 1
    assert M3SELoss()(t([s]), t([te])).item() == pytest.approx(((4 - 2.5) - (3 - 1)) ** 2)


def test_m3se_hinge_active_adds_squared_excess():
    s, te = [3.0, 1.0, 1.7, -1.0], [4.0, 2.5, 0.0, 1.0]  # negative 2 is 0.7 above s_{j*} = 1
    assert M3SELoss()(t([s]), t([te])).item() == pytest.approx(((4 - 2.5) - (3 - 1)) ** 2 + 0.7**2)


def test_m3se_multi_positive_sums_over_positives_and_excludes_them_from_j_star():
    s, te = [2.0, 0.0, 1.0, 0.5], [5.0, 1.0, 0.5, 2.0]
    labels = torch.tensor([[True, False, True, False]])
    # P = {0, 2}, N = {1, 3}; j* = 3 (teacher 2.0) even though positive 0 scores higher.
    margin = ((5 - 2) - (2 - 0.5)) ** 2 + ((0.5 - 2) - (1 - 0.5)) ** 2  # 2.25 + 4
    hinge = max(0.0, 0.0 - 0.5) ** 2  # negative 1 is below s_{j*}
    assert M3SELoss()(t([s]), t([te]), labels).item() == pytest.approx(margin + hinge)


def test_m3se_2x4_is_mean_over_queries():
    s, te = np.array(S_2x4), np.array(T_2x4)
    per_row = []
    for b in range(2):
        j = 1 + int(np.argmax(te[b, 1:]))
        margin = ((te[b, 0] - te[b, j]) - (s[b, 0] - s[b, j])) ** 2
        hinge = sum(max(0.0, s[b, n] - s[b, j]) ** 2 for n in (1, 2, 3))
        per_row.append(margin + hinge)
    assert M3SELoss()(t(S_2x4), t(T_2x4)).item() == pytest.approx(np.mean(per_row), rel=1e-6)


def test_m3se_is_invariant_to_per_query_shifts():
    s, te = t(S_2x4), t(T_2x4)
    base = M3SELoss()(s, te).item()
    assert base > 0
    shift = t([[10.0], [-4.0]])
    assert M3SELoss()(s + shift, te).item() == pytest.approx(base, rel=1e-5)
    assert M3SELoss()(s, te + shift).item() == pytest.approx(base, rel=1e-5)


def test_m3se_gradient_flows_through_s_j_star_in_both_terms():
    s = t([[3.0, 2.0, 0.5, 1.0]]).requires_grad_()
    M3SELoss()(s, t([[4.0, 1.0, 2.0, 0.0]])).backward()
    # e = (4 - 2) - (3 - 0.5) = -0.5: d/ds0 = -2e = 1, d/ds2 (margin) = 2e = -1;
    # hinge h1 = 1.5, h3 = 0.5: d/ds1 = 2 h1 = 3, d/ds3 = 2 h3 = 1, d/ds2 (hinge) = -2 (h1 + h3) = -4
    np.testing.assert_allclose(s.grad.numpy(), [[1.0, 3.0, -5.0, 1.0]], rtol=1e-6)


# --- all losses --------------------------------------------------------------------------------

def make(name: str):
    return LOSSES[name](seed=0) if name == "rankdistil" else LOSSES[name]()


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_gradients_exist_and_are_finite(name):
    student = t(S_2x4).requires_grad_()
    teacher = t(T_2x4).requires_grad_()
    loss = make(name)(student, teacher)
    assert loss.dim() == 0 and loss.dtype == torch.float32
    loss.backward()
    assert student.grad is not None
    assert torch.isfinite(student.grad).all()
    assert student.grad.abs().sum() > 0
    assert teacher.grad is None  # teacher scores are targets, never trained through the loss


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_computes_in_float32_under_autocast(name):
    student = t(S_2x4).to(torch.bfloat16).requires_grad_()
    teacher = t(T_2x4).to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = make(name)(student, teacher)
    reference = make(name)(student.detach().float(), teacher.float())
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(reference.item(), rel=1e-6)
    loss.backward()
    assert student.grad is not None and torch.isfinite(student.grad.float()).all()


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_loss_is_mean_over_queries(name):
    s, te = t(S_2x4), t(T_2x4)
    if name == "rankdistil":  # deterministic orderings, so rows can be evaluated separately
        te = te * 100
    rows = [make(name)(s[b : b + 1], te[b : b + 1]).item() for b in range(2)]
    assert make(name)(s, te).item() == pytest.approx(np.mean(rows), rel=1e-5)


# ----------------------------------------------------------------------------------- calibration, in-batch
def test_fit_scale_matches_a_hand_computation():
    from dualist.losses.calibration import fit_scale

    s = torch.tensor([[3.0, 1.0, 2.0], [0.0, -1.0, 1.0]])
    t = torch.tensor([[30.0, 10.0, 20.0], [5.0, -5.0, 15.0]])
    # within-row squared deviations: student 2 + 2 = 4; teacher 200 + 200 = 400 -> a = sqrt(4/400) = 0.1
    # b = mean(s) - a * mean(t) = 1.0 - 0.1 * 12.5 = -0.25
    affine = fit_scale(s, t)
    assert affine.scale == pytest.approx(0.1) and affine.bias == pytest.approx(-0.25)
    assert torch.allclose(affine(t), torch.tensor([[2.75, 0.75, 1.75], [0.25, -0.75, 1.25]]))
    with pytest.raises(ValueError, match="do not vary"):
        fit_scale(s, torch.ones(2, 3))


def test_calibrated_loss_feeds_the_inner_loss_mapped_teacher_scores():
    from dualist.losses.calibration import Affine, Calibrated

    s, t = torch.tensor([[1.0, 0.5, -0.2]]), torch.tensor([[4.0, 2.0, 0.0]])
    wrapped = Calibrated(build_loss("mse"), Affine(0.5, -1.0))
    assert wrapped(s, t).item() == pytest.approx(build_loss("mse")(s, t * 0.5 - 1.0).item())
    assert wrapped.requires_teacher


def test_distillation_with_in_batch_one_hot_equals_a_numpy_reference():
    from dualist.losses.in_batch import WithInBatchOneHot

    rng = np.random.default_rng(0)
    own, extra = 4, 6
    s = rng.normal(size=(3, own + extra)).astype(np.float32)
    s[1, own + 2] = -1e4  # a masked in-batch column (relevant to the row's query)
    t = rng.normal(size=(3, own)).astype(np.float32)
    margins_s, margins_t = s[:, :1] - s[:, 1:own], t[:, :1] - t[:, 1:]
    margin_mse = ((margins_s - margins_t) ** 2).mean(1).mean()
    ce = (np.log(np.exp(s.astype(np.float64)).sum(1)) - s[:, 0]).mean()
    loss = WithInBatchOneHot(build_loss("margin_mse"), weight=0.3)(torch.from_numpy(s), torch.from_numpy(t))
    assert loss.item() == pytest.approx(margin_mse + 0.3 * ce, rel=1e-5)
    with pytest.raises(ValueError, match="teacher"):
        WithInBatchOneHot(build_loss("mse"))(torch.from_numpy(s))


def test_positive_floor_raises_positives_to_the_best_negative_plus_the_margin():
    from dualist.losses.label_floor import PositiveFloor, floor_positives

    t = torch.tensor([[1.0, 3.0, 2.0, 0.5],     # positive below the best negative (3): raised to 3.25
                      [5.0, 3.0, 2.0, 0.5],     # already 2 above it: unchanged
                      [1.0, 0.0, 4.0, 2.0]])    # two positives (columns 0, 1), best negative 4
    pos = torch.tensor([[True, False, False, False], [True, False, False, False], [True, True, False, False]])
    expected = torch.tensor([[3.25, 3.0, 2.0, 0.5], [5.0, 3.0, 2.0, 0.5], [4.25, 4.25, 4.0, 2.0]])
    assert torch.equal(floor_positives(t, pos, 0.25), expected)
    assert torch.equal(floor_positives(t, torch.ones_like(pos), 0.25), t)  # no negative: nothing to be above
    # in front of a loss: that loss on the floored targets; column 0 is the positive without labels
    s = torch.tensor([[0.2, 0.1, -0.3, 0.0]])
    kl = build_loss("kl")
    assert PositiveFloor(kl, 0.25)(s, t[:1]).item() == pytest.approx(kl(s, expected[:1]).item())
    assert PositiveFloor(kl, 0.25)(s, t[2:], pos[2:]).item() == pytest.approx(kl(s, expected[2:]).item())
    with pytest.raises(ValueError, match="teacher"):
        PositiveFloor(kl)(s)
