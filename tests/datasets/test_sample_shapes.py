"""Tensor folders tell the dynamic dims they were saved with: a text model's ``[batch, seq]``
inputs need no ``--shape`` when the samples are ``.npz`` files of a fixed sequence length."""

from __future__ import annotations

import numpy as np
import pytest

from trtq._core.tensors import TensorInfo
from trtq.datasets.folder import open_dataset, sample_shapes
from trtq.datasets.input_spec import resolve_input_specs

TEXT_INPUTS = [
    TensorInfo("input_ids", (None, "seq"), np.dtype(np.int64)),
    TensorInfo("attention_mask", ("batch", "seq"), np.dtype(np.int64)),
    TensorInfo("token_type_ids", ("batch", 32), np.dtype(np.int64)),
]


def _save(folder, seq: int, n: int = 3, batch: int | None = None) -> None:
    folder.mkdir(exist_ok=True)
    lead = () if batch is None else (batch,)
    for i in range(n):
        np.savez(
            folder / f"s{i}.npz",
            input_ids=np.full((*lead, seq), i, np.int64),
            attention_mask=np.ones((*lead, seq), np.int64),
            token_type_ids=np.zeros((*lead, 32), np.int64),
        )


@pytest.mark.parametrize("batch", [None, 2])
def test_dynamic_dims_come_from_the_first_sample_and_the_data_loads(tmp_path, batch):
    _save(tmp_path / "s", 24, n=4, batch=batch)
    shapes = sample_shapes(tmp_path / "s", TEXT_INPUTS)
    lead = 1 if batch is None else batch
    assert shapes == {"input_ids": (lead, 24), "attention_mask": (lead, 24)}  # token_type_ids is static
    specs = resolve_input_specs(TEXT_INPUTS, shapes, batch_size=4)
    assert [s.shape for s in specs] == [(4, 24), (4, 24), (4, 32)]
    ds = open_dataset(tmp_path / "s", specs)
    batches = list(ds.batches(4))
    n = 4 * (batch or 1)
    assert len(ds) == n and sum(b["input_ids"].shape[0] for b in batches) == n
    assert all(b["input_ids"].shape[1] == 24 for b in batches)


def test_given_shapes_win_and_image_folders_or_static_models_need_nothing(tmp_path):
    _save(tmp_path / "s", 24)
    assert sample_shapes(tmp_path / "s", TEXT_INPUTS, {"input_ids": (1, 16), "attention_mask": (1, 16)}) == {}
    static = [TensorInfo("x", (1, 8), np.dtype(np.float32))]
    assert sample_shapes(tmp_path / "s", static) == {}
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.png").write_bytes(b"")
    assert sample_shapes(tmp_path / "imgs", TEXT_INPUTS) == {}
    assert sample_shapes(tmp_path / "nowhere", TEXT_INPUTS) == {}


def test_a_sample_of_another_sequence_length_is_reported_by_name(tmp_path):
    _save(tmp_path / "s", 24)
    np.savez(
        tmp_path / "s" / "z_long.npz",
        input_ids=np.zeros(40, np.int64),
        attention_mask=np.ones(40, np.int64),
        token_type_ids=np.zeros(32, np.int64),
    )
    specs = resolve_input_specs(TEXT_INPUTS, sample_shapes(tmp_path / "s", TEXT_INPUTS), batch_size=1)
    ds = open_dataset(tmp_path / "s", specs)
    assert len(ds) == 3  # the three 24-token samples; the 40-token file is skipped, by name
    list(ds.batches(1))
    assert any("z_long.npz" in f for f, _ in ds.stats.skipped_files)
