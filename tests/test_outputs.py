"""Outputs are written atomically, and unusable output folders are refused before any work starts."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from pipeline.checkpoints import AtomicDiskSaver
from pipeline.inference.writers import AtomicNibabelWriter
from pipeline.preflight import PreflightError, check_output_folder


def test_an_output_folder_that_cannot_be_created_is_refused_naming_it(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(PreflightError, match=f"^{tmp_path / 'file' / 'out'}: cannot write here"):
        check_output_folder(tmp_path / "file" / "out", min_free_bytes=0)


def test_a_folder_with_too_little_free_space_is_refused_naming_it(tmp_path):
    with pytest.raises(PreflightError, match=f"^{tmp_path}: only .* MiB free"):
        check_output_folder(tmp_path, min_free_bytes=2**62)
    assert list(tmp_path.iterdir()) == []  # the probe file is gone


def test_a_checkpoint_replaced_by_ignite_stays_until_its_successor_is_written(tmp_path, monkeypatch):
    saver = AtomicDiskSaver(tmp_path)
    saver({"step": torch.tensor(1)}, "latest_epoch=1.pt")
    saver.remove("latest_epoch=1.pt")  # ignite asks for the removal before it saves the next checkpoint
    monkeypatch.setattr(torch, "save", lambda *args, **kwargs: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        saver({"step": torch.tensor(2)}, "latest_epoch=2.pt")
    assert [path.name for path in tmp_path.iterdir()] == ["latest_epoch=1.pt"]
    monkeypatch.undo()
    saver({"step": torch.tensor(2)}, "latest_epoch=2.pt")
    assert [path.name for path in tmp_path.iterdir()] == ["latest_epoch=2.pt"]


def test_a_mask_write_that_fails_leaves_neither_a_partial_file_nor_a_temporary_one(tmp_path, monkeypatch):
    def write_half_then_fail(image, filename):
        with open(filename, "wb") as handle:
            handle.write(b"\x00" * 10)
        raise OSError("disk full")

    writer = AtomicNibabelWriter()
    writer.data_obj, writer.affine = np.ones((4, 4), dtype=np.uint8), np.eye(4)
    monkeypatch.setattr(nib, "save", write_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        writer.write(tmp_path / "1_seg.nii.gz")
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    writer.data_obj = np.ones((4, 4), dtype=np.uint8)  # write() replaced it by the nibabel image
    writer.write(tmp_path / "1_seg.nii.gz")
    assert nib.load(tmp_path / "1_seg.nii.gz").shape == (4, 4)
