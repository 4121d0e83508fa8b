"""augment: each transform does what its name says; the view bank; training views vs. the identity view."""

from __future__ import annotations

import numpy as np
import pytest

from cytoops import augment
from cytoops.params import STRATEGIES

# 2 rows (Y) x 3 columns (X), every value distinct: any flip shows
A = np.array([[1, 2, 3], [4, 5, 6]])


def test_identity_leaves_the_array_as_it_is():
    np.testing.assert_array_equal(augment.TRANSFORMS["identity"](A), A)


def test_hflip_reverses_x():
    np.testing.assert_array_equal(augment.TRANSFORMS["hflip"](A), [[3, 2, 1], [6, 5, 4]])


def test_vflip_reverses_y():
    np.testing.assert_array_equal(augment.TRANSFORMS["vflip"](A), [[4, 5, 6], [1, 2, 3]])


def test_hvflip_reverses_both_axes():
    np.testing.assert_array_equal(augment.TRANSFORMS["hvflip"](A), [[6, 5, 4], [3, 2, 1]])
    np.testing.assert_array_equal(augment.TRANSFORMS["hvflip"](A), np.rot90(A, 2))


def test_rotations_and_transposes():
    # rot90 turns counter-clockwise
    np.testing.assert_array_equal(augment.TRANSFORMS["rot90"](A), [[3, 6], [2, 5], [1, 4]])
    np.testing.assert_array_equal(augment.TRANSFORMS["rot270"](A), [[4, 1], [5, 2], [6, 3]])
    np.testing.assert_array_equal(augment.TRANSFORMS["transpose"](A), [[1, 4], [2, 5], [3, 6]])
    np.testing.assert_array_equal(augment.TRANSFORMS["antitranspose"](A), [[6, 3], [5, 2], [4, 1]])


def test_transforms_act_on_the_last_two_axes_only():
    stack = np.stack([A, A + 10])[None]  # (1, 2, Y, X): e.g. (wells, channels, Y, X)
    for name, transform in augment.TRANSFORMS.items():
        out = transform(stack)
        assert out.shape[:2] == (1, 2), name
        np.testing.assert_array_equal(out[0, 1], transform(A + 10), err_msg=name)


def test_the_d4_set_gives_eight_distinct_images_of_an_asymmetric_image():
    image = np.arange(9).reshape(3, 3)
    outs = [augment.TRANSFORMS[t](image) for t in augment.STRATEGY_VIEWS["d4"]]
    assert len(outs) == 8
    assert len({o.tobytes() for o in outs}) == 8
    # and they are the eight symmetries of the square: the rotations of the image and of its transpose
    group = {np.rot90(m, k).tobytes() for m in (image, image.T) for k in range(4)}
    assert {o.tobytes() for o in outs} == group


def test_strategy_views_for_the_studys_strategies():
    assert augment.STRATEGY_VIEWS["none"] == ("identity",)
    assert augment.STRATEGY_VIEWS["hflip"] == ("identity", "hflip")
    assert augment.STRATEGY_VIEWS["vflip"] == ("identity", "vflip")
    assert augment.STRATEGY_VIEWS["hvflip"] == ("identity", "hvflip")
    assert augment.STRATEGY_VIEWS["flips"] == ("identity", "hflip", "vflip", "hvflip")
    assert set(augment.STRATEGY_VIEWS["d4"]) == set(augment.TRANSFORMS)
    assert set(augment.STRATEGY_VIEWS) == set(STRATEGIES)
    assert all(views[0] == "identity" for views in augment.STRATEGY_VIEWS.values())


def test_views_for_is_the_union_identity_first_in_a_fixed_order():
    assert augment.views_for(("none",)) == ("identity",)
    assert augment.views_for(("vflip", "hflip")) == ("identity", "hflip", "vflip")
    assert augment.views_for(("hflip", "vflip")) == augment.views_for(("vflip", "hflip"))
    assert augment.views_for(("none", "flips")) == ("identity", "hflip", "vflip", "hvflip")
    assert len(augment.views_for(("d4",))) == 8


def images(n: int = 5, size: int = 4) -> np.ndarray:
    return np.random.default_rng(0).random((n, 2, size, size)).astype(np.float32)


def test_make_bank_holds_every_needed_view_of_every_well():
    x = images()
    bank = augment.make_bank(x, ("none", "hvflip", "vflip"))
    assert bank.views == ("identity", "vflip", "hvflip")
    assert bank.images.shape == (3, 5, 2, 4, 4)
    assert bank.images.dtype == np.float16
    for v, name in enumerate(bank.views):
        np.testing.assert_array_equal(bank.images[v], augment.TRANSFORMS[name](x).astype(np.float16))
    assert bank.index("hvflip") == 2


def test_training_views_returns_only_the_requested_wells_with_their_source():
    x = images(n=6)
    bank = augment.make_bank(x, ("flips",), dtype=np.float32)
    wells = np.array([4, 1, 3])
    out, source = augment.training_views(bank.images, bank.views, "flips", wells)
    assert out.shape == (12, 2, 4, 4)
    np.testing.assert_array_equal(source, np.tile(wells, 4))
    assert set(source) == {1, 3, 4}
    # each copy is its source well under one of the strategy's transforms, each transform once per well
    for name in augment.STRATEGY_VIEWS["flips"]:
        expected = augment.TRANSFORMS[name](x[wells])
        hits = [i for i in range(len(out)) if any(np.array_equal(out[i], e) for e in expected)]
        assert len(hits) == len(wells), name
    for copy, src in zip(out, source, strict=True):
        flips = augment.STRATEGY_VIEWS["flips"]
        assert any(np.array_equal(copy, augment.TRANSFORMS[t](x[src])) for t in flips)
    # the other wells never appear
    others = [w for w in range(6) if w not in wells]
    for copy in out:
        assert not any(np.array_equal(copy, augment.TRANSFORMS[t](x[o])) for t in bank.views for o in others)


def test_training_views_under_none_is_the_identity_of_the_wells():
    x = images()
    bank = augment.make_bank(x, ("none", "hflip"), dtype=np.float32)
    out, source = augment.training_views(bank.images, bank.views, "none", np.array([0, 2]))
    np.testing.assert_array_equal(out, x[[0, 2]])
    np.testing.assert_array_equal(source, [0, 2])


def test_training_views_work_on_per_view_features_too():
    features = np.arange(3 * 4 * 2).reshape(3, 4, 2)  # (views, wells, features)
    out, source = augment.training_views(features, ("identity", "hflip", "vflip"), "vflip", np.array([1, 3]))
    np.testing.assert_array_equal(out, [features[0, 1], features[0, 3], features[2, 1], features[2, 3]])
    np.testing.assert_array_equal(source, [1, 3, 1, 3])


@pytest.mark.parametrize("strategies", [("none",), ("hflip", "vflip"), ("d4",)])
def test_identity_view_is_never_transformed(strategies):
    x = images()
    bank = augment.make_bank(x, strategies, dtype=np.float32)
    wells = np.array([3, 0])
    np.testing.assert_array_equal(augment.identity_view(bank.images, bank.views, wells), x[wells])


def test_identity_view_finds_identity_wherever_it_is():
    features = np.stack([np.full((3, 2), v) for v in (7.0, 0.0, 9.0)])  # identity is the middle view here
    out = augment.identity_view(features, ("hflip", "identity", "vflip"), np.array([1, 2]))
    np.testing.assert_array_equal(out, np.zeros((2, 2)))


def test_save_and_load_round_trip(tmp_path):
    bank = augment.make_bank(images(), ("flips",))
    augment.save(bank, tmp_path / "a" / "views.npz")
    back = augment.load(tmp_path / "a" / "views.npz")
    assert back.views == bank.views
    np.testing.assert_array_equal(back.images, bank.images)


def test_labelled_views_label_each_copy_with_its_wells_label():
    images = np.arange(4 * 5).reshape(4, 5).astype(float)  # (views, wells): the value names view and well
    views = ("identity", "hflip", "vflip", "hvflip")
    wells, labels = np.array([3, 0, 4]), np.array([1, 0, 1])
    x, y = augment.labelled_views(images, views, "flips", wells, labels)
    _, source = augment.training_views(images, views, "flips", wells)
    np.testing.assert_array_equal(y, [dict(zip(wells, labels, strict=True))[s] for s in source])
    np.testing.assert_array_equal(x % 5, source)
