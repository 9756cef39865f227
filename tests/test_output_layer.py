"""The output layer's own promises: a name made from file contents never leads out of the output folder, and one
run holds an output folder at a time, leaving nothing behind."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.outputs import (
    LOCK_NAME,
    MAX_NAME_LENGTH,
    OutputFolderBusyError,
    UnsafeOutputPathError,
    output_folder_lock,
    output_path,
    safe_name,
)


@pytest.mark.parametrize("value", ["1.2.840.113619.2.55.3", "T1_axial-post", "a" * MAX_NAME_LENGTH])
def test_a_name_already_safe_is_kept_unchanged(value):
    assert safe_name(value) == value


@pytest.mark.parametrize("value", ["../../../x", "/etc/passwd", "..", ".", "", "a/b", "a\\b", "x\x00y", "ü" * 10])
def test_a_hostile_value_becomes_one_plain_name(value, tmp_path):
    name = safe_name(value)
    assert "/" not in name and "\\" not in name and not name.startswith(".") and name not in ("", ".", "..")
    assert output_path(tmp_path, name).parent == tmp_path


@given(st.text(max_size=200))
def test_every_value_gives_a_bounded_name_inside_the_folder(value):
    name = safe_name(value)
    assert 0 < len(name) <= MAX_NAME_LENGTH
    assert set(name) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
    assert not name.startswith(".")


def test_two_values_that_differ_never_share_a_name():
    assert safe_name("a/b") != safe_name("a_b") == "a_b"
    assert safe_name("x" * 100) != safe_name("x" * 101)


@pytest.mark.parametrize("part", ["../escaped", "/tmp/absolute", "sub/../../escaped", "."])
def test_a_path_leading_out_of_the_folder_is_refused_in_one_line(tmp_path, part):
    with pytest.raises(UnsafeOutputPathError, match="outside the output folder") as raised:
        output_path(tmp_path / "out", part)
    assert "\n" not in str(raised.value)


def test_a_link_inside_the_folder_that_leads_out_is_refused(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "link").symlink_to(tmp_path)
    with pytest.raises(UnsafeOutputPathError):
        output_path(tmp_path / "out", "link", "mask.nii.gz")
    assert output_path(tmp_path / "out", "sub", "mask.nii.gz") == tmp_path / "out" / "sub" / "mask.nii.gz"


def test_the_lock_is_removed_when_the_run_ends_and_a_second_holder_is_refused(tmp_path):
    with output_folder_lock(tmp_path / "out") as lock:
        assert lock.read_text().strip() == str(os.getpid())
        holder = subprocess.run(
            [
                sys.executable,
                "-c",
                f"from pipeline.outputs import output_folder_lock as l\nwith l({str(tmp_path / 'out')!r}): pass",
            ],
            capture_output=True,
            text=True,
        )
        assert holder.returncode != 0 and f"another run (process {os.getpid()})" in holder.stderr
    assert not (tmp_path / "out" / LOCK_NAME).exists()


def test_a_lock_path_that_is_a_folder_is_one_line(tmp_path):
    (tmp_path / "out" / LOCK_NAME).mkdir(parents=True)
    with pytest.raises(OutputFolderBusyError, match="not a regular file") as raised:
        with output_folder_lock(tmp_path / "out"):
            pass
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize("link", ["symbolic", "hard"])
def test_a_lock_file_that_is_a_link_is_refused_and_what_it_leads_to_is_untouched(tmp_path, link):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (tmp_path / "out").mkdir()
    lock = tmp_path / "out" / LOCK_NAME
    lock.symlink_to(victim) if link == "symbolic" else lock.hardlink_to(victim)
    with pytest.raises(OutputFolderBusyError, match="lock file is (a link|a file with other names)") as raised:
        with output_folder_lock(tmp_path / "out"):
            pass
    assert "\n" not in str(raised.value)
    assert victim.read_text() == "precious\n"


def test_clearing_stale_temporaries_never_follows_a_link_out_of_the_folder(tmp_path):
    from pipeline.atomic import remove_stale_temporaries_below

    outside = tmp_path / "outside"
    outside.mkdir()
    theirs = outside / ".abcdefgh~thesis.docx"
    theirs.write_text("keep")
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    ours = out / "sub" / ".ijklmnop~1_seg.nii.gz"
    ours.write_text("stale")
    (out / "linked").symlink_to(outside)
    (out / ".qrstuvwx~a.png").symlink_to(theirs)
    assert remove_stale_temporaries_below(out) == [ours]
    assert theirs.read_text() == "keep" and (out / ".qrstuvwx~a.png").is_symlink()
