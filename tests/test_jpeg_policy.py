"""JPEG slices are refused by every command that finds slices, each with the reason: lossy compression changes pixel
values and blurs the tumour's edge, in a slice and in its mask alike."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from tiny_bundle import THRESHOLD_NETWORK

from pipeline.__main__ import main
from pipeline.data.sources import lossy_refusal


def _slice(path: Path, mask: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.zeros((24, 32), np.uint8)
    pixels[4:10, 6:20] = 255
    if not mask:
        pixels[:, :3] = 90
    Image.fromarray(pixels).save(path)
    return path


def test_prepare_refuses_jpeg_slices_and_masks_naming_each_with_the_reason(tmp_path, capsys):
    src = tmp_path / "src"
    for number in (1, 2, 3):
        _slice(src / "images" / f"{number}.png")
        _slice(src / "masks" / f"{number}.png", mask=True)
    jpegs = [_slice(src / "images" / "4.jpg"), _slice(src / "masks" / "4.jpeg", mask=True)]
    assert main(["prepare", "--src", str(src), "--out", str(tmp_path / "dataset")]) == 1
    error = capsys.readouterr().err
    for path in jpegs:
        assert lossy_refusal(path) in error
    assert "JPEG is refused: its lossy compression changes pixel values and blurs the tumour's edge" in error
    assert not (tmp_path / "dataset" / "datalist.json").exists()


def test_infer_segments_the_other_slices_and_refuses_a_jpeg_one_with_the_reason(tmp_path, ckpt_dir, capsys):
    folder = tmp_path / "in"
    _slice(folder / "1.png")
    _slice(folder / "2.jpg")
    arguments = ["infer", "--input", str(folder), "--output", str(tmp_path / "out"), "--device", "cpu"]
    arguments += ["--ckpt-dir", str(ckpt_dir), "--network_def", json.dumps(THRESHOLD_NETWORK), "--image_size", "32"]
    assert main([*arguments, "--num_workers", "0", "--no-overlays"]) == 1
    assert lossy_refusal(folder / "2.jpg") in capsys.readouterr().err
    # No mask for the JPEG, and no lock file left behind by the finished run.
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["1_seg.nii.gz", "inference_record.json"]
