"""Input validation of the losses and the registry: errors say what was expected and what was got."""

from __future__ import annotations

import re
from typing import get_args

import pytest
import torch

from dualist.losses import (
    LOSSES,
    LossName,
    M3SELoss,
    MarginMSELoss,
    OneHotCELoss,
    RankDistilLoss,
    ScoreMSELoss,
    SoftmaxKLLoss,
    build_loss,
)

NAMES = ["onehot", "mse", "margin_mse", "kl", "rankdistil", "m3se"]
DISTILLATION = ["mse", "margin_mse", "kl", "rankdistil", "m3se"]
NEEDS_NEGATIVE = ["onehot", "margin_mse", "m3se"]


def make(name: str):
    return LOSSES[name](seed=0) if name == "rankdistil" else LOSSES[name]()


# --- registry ----------------------------------------------------------------------------------

def test_registry_has_exactly_the_six_losses():
    assert list(LOSSES) == NAMES
    assert list(get_args(LossName)) == NAMES


def test_requires_teacher_flags():
    assert {name for name, cls in LOSSES.items() if cls.requires_teacher} == set(DISTILLATION)
    assert OneHotCELoss.requires_teacher is False


@pytest.mark.parametrize("name", NAMES)
def test_build_loss_returns_registered_class(name):
    assert type(make(name)) is LOSSES[name]
    assert isinstance(build_loss(name), torch.nn.Module)


def test_build_loss_passes_keyword_arguments():
    loss = build_loss("rankdistil", k=2, num_samples=3, temperature=0.5, seed=1)
    assert (loss.k, loss.num_samples, loss.temperature) == (2, 3, 0.5)
    assert build_loss("kl", temperature=4.0).temperature == 4.0


def test_build_loss_unknown_name_lists_valid_names():
    with pytest.raises(ValueError) as err:
        build_loss("m3s")
    message = str(err.value)
    assert "unknown loss 'm3s'" in message
    assert "did you mean 'm3se'" in message
    for name in NAMES:
        assert name in message


def test_build_loss_wrong_kwarg_names_accepted_ones():
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\) tau; "
                                        r"accepted keyword arguments: temperature"):
        build_loss("kl", tau=2.0)
    with pytest.raises(TypeError, match="'m3se'.*got unexpected keyword argument.*margin.*"
                                        "takes no keyword arguments"):
        build_loss("m3se", margin=1.0)
    with pytest.raises(TypeError, match="k, num_samples, temperature, seed, generator"):
        build_loss("rankdistil", samples=2)


@pytest.mark.parametrize("kwargs, message", [
    ({"temperature": 0.0}, "temperature must be > 0, got 0.0"),
    ({"k": 0}, "k must be >= 1"),
    ({"num_samples": 0}, "num_samples must be >= 1, got 0"),
    ({"seed": 1, "generator": torch.Generator()}, "either seed or generator"),
])
def test_rankdistil_rejects_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        RankDistilLoss(**kwargs)


def test_kl_rejects_bad_temperature():
    with pytest.raises(ValueError, match="temperature must be > 0, got -1"):
        SoftmaxKLLoss(temperature=-1.0)


def test_rankdistil_k_larger_than_candidates():
    with pytest.raises(ValueError, match=r"k=5 exceeds the number of candidates C=3"):
        RankDistilLoss(k=5, seed=0)(torch.zeros(2, 3), torch.zeros(2, 3))


# --- shapes and dtypes -------------------------------------------------------------------------

@pytest.mark.parametrize("name", DISTILLATION)
def test_mismatched_teacher_shape(name):
    expected = ("teacher_scores must have the same shape as student_scores (B, C) = (4, 8), "
                "got (4, 7)")
    with pytest.raises(ValueError, match=re.escape(expected)):
        make(name)(torch.zeros(4, 8), torch.zeros(4, 7))


@pytest.mark.parametrize("name", NAMES)
def test_one_dimensional_scores(name):
    with pytest.raises(ValueError, match=r"student_scores must be 2-D \(B, C\).*got 1-D shape \(8,\)"
                                         r".*unsqueeze\(0\)"):
        make(name)(torch.zeros(8), torch.zeros(8))


@pytest.mark.parametrize("name", NAMES)
def test_three_dimensional_scores(name):
    with pytest.raises(ValueError, match=r"got 3-D shape \(2, 3, 4\)"):
        make(name)(torch.zeros(2, 3, 4), torch.zeros(2, 3, 4))


@pytest.mark.parametrize("name", DISTILLATION)
def test_missing_teacher(name):
    cls = LOSSES[name].__name__
    with pytest.raises(ValueError, match=rf"{cls} is a distillation loss and needs teacher_scores "
                                         rf"of shape \(B, C\) = \(2, 3\), got None"):
        make(name)(torch.zeros(2, 3))


def test_onehot_needs_no_teacher():
    assert OneHotCELoss()(torch.zeros(2, 3)).item() == pytest.approx(torch.log(torch.tensor(3.0)).item())


@pytest.mark.parametrize("name", NAMES)
def test_labels_must_be_boolean(name):
    labels = torch.zeros(2, 3, dtype=torch.long)
    labels[:, 0] = 1
    with pytest.raises(ValueError, match=r"labels must be a boolean mask of shape \(B, C\) = \(2, 3\) "
                                         r"marking the positives, got dtype torch.int64"):
        make(name)(torch.zeros(2, 3), torch.zeros(2, 3), labels)


@pytest.mark.parametrize("name", NAMES)
def test_labels_wrong_shape(name):
    labels = torch.ones(2, 4, dtype=torch.bool)
    with pytest.raises(ValueError, match=re.escape("labels must be a boolean mask of shape "
                                                   "(B, C) = (2, 3), got shape (2, 4)")):
        make(name)(torch.zeros(2, 3), torch.zeros(2, 3), labels)


@pytest.mark.parametrize("name", NAMES)
def test_row_without_positive(name):
    labels = torch.zeros(4, 3, dtype=torch.bool)
    labels[[0, 1], 0] = True
    with pytest.raises(ValueError, match=r"row 2 of labels has no positive \(2 of 4 rows have none\)"):
        make(name)(torch.zeros(4, 3), torch.zeros(4, 3), labels)


@pytest.mark.parametrize("name", NEEDS_NEGATIVE)
def test_row_without_negative_where_the_formula_needs_one(name):
    labels = torch.zeros(3, 3, dtype=torch.bool)
    labels[:, 0] = True
    labels[1] = True
    with pytest.raises(ValueError, match=r"row 1 of labels has no negative \(1 of 3 rows have none\)"):
        make(name)(torch.zeros(3, 3), torch.zeros(3, 3), labels)


@pytest.mark.parametrize("name", NEEDS_NEGATIVE)
def test_single_column_without_labels_has_no_negative(name):
    with pytest.raises(ValueError, match=r"C=1 column, the positive, and no negative"):
        make(name)(torch.zeros(2, 1), torch.zeros(2, 1))


@pytest.mark.parametrize("name", ["mse", "kl", "rankdistil"])
def test_losses_without_negatives_accept_all_positive_rows(name):
    labels = torch.ones(2, 3, dtype=torch.bool)
    student, teacher = torch.tensor([[1.0, 0.0, 2.0]] * 2), torch.tensor([[0.0, 1.0, 2.0]] * 2)
    assert make(name)(student, teacher, labels).item() > 0


@pytest.mark.parametrize("name", NAMES)
def test_integer_scores_rejected(name):
    with pytest.raises(ValueError, match="student_scores must be a floating-point tensor, "
                                         "got dtype torch.int64"):
        make(name)(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 3))


def test_integer_teacher_rejected():
    with pytest.raises(ValueError, match="teacher_scores must be a floating-point tensor"):
        M3SELoss()(torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.long))


def test_non_tensor_rejected():
    with pytest.raises(TypeError, match="student_scores must be a torch.Tensor.*got list"):
        ScoreMSELoss()([[1.0, 2.0]], torch.zeros(1, 2))
    with pytest.raises(TypeError, match="teacher_scores must be a torch.Tensor.*got list"):
        MarginMSELoss()(torch.zeros(1, 2), [[1.0, 2.0]])


def test_error_names_the_loss():
    with pytest.raises(ValueError, match=r"^M3SELoss: "):
        M3SELoss()(torch.zeros(4, 8), torch.zeros(4, 7))
