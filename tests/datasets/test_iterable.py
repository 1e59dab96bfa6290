"""from_iterable: a user's iterable of dicts, re-batched, validated, read lazily."""

from __future__ import annotations

import numpy as np
import pytest

from trtq._core.errors import InputError
from trtq.datasets import TensorInfo, from_iterable

A = TensorInfo("a", (2, 3), np.float32)
B = TensorInfo("b", (2, 2, 2), np.float16)


def test_samples_and_batches_are_rebatched_in_order():
    items = [
        {"a": np.arange(3), "b": np.zeros((2, 2))},  # one sample
        {"a": np.arange(9).reshape(3, 3) + 10, "b": np.ones((3, 2, 2))},  # a batch of 3
        {"a": [7.0, 7.0, 7.0], "b": np.full((2, 2), 2.0)},  # lists are fine
    ]
    ds = from_iterable(items, [A, B], length=5)
    assert len(ds) == 5
    out = list(ds.batches())  # default batch size = the inputs' batch dim (2)
    assert [(o["a"].shape, o["b"].shape) for o in out] == [((2, 3), (2, 2, 2))] * 2
    assert out[0]["a"].dtype == np.float32 and out[0]["b"].dtype == np.float16
    a = np.concatenate([o["a"] for o in out])
    np.testing.assert_array_equal(a[:, 0], [0, 10, 13, 16])
    assert ds.stats.used == 4 and ds.stats.dropped == 1
    assert list(ds.batches(5))[0]["a"][4, 0] == 7  # a list can be read again


def test_a_generator_is_read_lazily_within_the_prefetch_bound():
    pulled = [0]

    def gen():
        for i in range(100):
            pulled[0] += 1
            yield {"a": np.full(3, i), "b": np.zeros((2, 2))}

    ds = from_iterable(gen(), [A, B])
    it = ds.batches(1, prefetch=2)
    for taken in range(1, 6):
        batch = next(it)
        assert batch["a"][0, 0] == taken - 1
        # at most the consumed items + 2 queued + 1 in the reader's hand
        assert pulled[0] <= taken + 3
    it.close()
    assert pulled[0] < 12
    with pytest.raises(TypeError, match="unknown"):
        len(ds)
    small = from_iterable((x for x in [{"a": np.zeros(3), "b": np.zeros((2, 2))}]), [A, B])
    assert len(list(small.batches(1))) == 1
    with pytest.raises(InputError, match="no samples"):
        list(small.batches(1))  # a generator can be read once


@pytest.mark.parametrize(
    "item, words",
    [
        ({"a": np.zeros(3)}, ["item 0", "missing ['b']"]),
        ({"a": np.zeros(3), "b": np.zeros((2, 2)), "c": 1}, ["unknown ['c']"]),
        ({"a": np.zeros(4), "b": np.zeros((2, 2))}, ["item 0", "'a'", "shape 4"]),
        ([np.zeros(3)], ["item 0", "list"]),
        ({"a": np.zeros((2, 3)), "b": np.zeros((3, 2, 2))}, ["different numbers"]),
    ],
)
def test_invalid_items_raise_with_the_index(item, words):
    with pytest.raises(InputError) as err:
        list(from_iterable([item], [A, B]).batches(1, prefetch=0))
    assert all(w in str(err.value) for w in words), str(err.value)


def test_errors_inside_the_iterable_reach_the_consumer():
    def gen():
        yield {"a": np.zeros(3), "b": np.zeros((2, 2))}
        raise RuntimeError("user bug")

    with pytest.raises(RuntimeError, match="user bug"):
        list(from_iterable(gen(), [A, B]).batches(1))


def test_too_few_samples():
    with pytest.raises(InputError, match="only 1 sample"):
        list(from_iterable([{"a": np.zeros(3), "b": np.zeros((2, 2))}], [A, B]).batches(2))
