"""``download``: checked, resumable fetching from figshare or a mirror, then ``prepare`` with the author's folds."""

import hashlib
import json
import os
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pipeline.__main__ import main
from pipeline.data import download
from pipeline.data.download import FIGSHARE_FILES, DownloadError, RemoteFile, fetch_files, file_url
from pipeline.data.figshare import read_cvind
from pipeline.phantoms.slices import synthesize_dataset

ARCHIVES = {"brainTumorDataPublic_1-766.zip": range(1, 11), "brainTumorDataPublic_767-1532.zip": range(11, 21)}


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def mirror(tmp_path_factory) -> Path:
    """A mirror folder with the figshare file names: two archives of phantom slices and cvind.mat."""
    phantom = tmp_path_factory.mktemp("phantom")
    synthesize_dataset(phantom, patients=10, slices_per_patient=2, size=128, seed=1)
    folder = tmp_path_factory.mktemp("mirror")
    for archive, numbers in ARCHIVES.items():
        with zipfile.ZipFile(folder / archive, "w") as bundle:
            for number in numbers:
                bundle.write(phantom / f"{number}.mat", f"{number}.mat")
    (folder / "cvind.mat").write_bytes((phantom / "cvind.mat").read_bytes())
    return folder


@pytest.fixture
def table(mirror) -> tuple[RemoteFile, ...]:
    """The mirror's files with their true checksums."""
    names = [*ARCHIVES, "cvind.mat"]
    return tuple(RemoteFile(name, index, md5(mirror / name)) for index, name in enumerate(names))


def run_download(*argv) -> int:
    return main(["download", *map(str, argv)])


def test_file_url_is_figshare_by_default_and_the_file_name_under_a_mirror(tmp_path):
    remote = FIGSHARE_FILES[0]
    assert file_url(remote) == f"https://figshare.com/ndownloader/files/{remote.file_id}"
    assert file_url(remote, "https://example.org/data/") == f"https://example.org/data/{remote.name}"
    assert file_url(remote, tmp_path) == (tmp_path.resolve() / remote.name).as_uri()
    with pytest.raises(DownloadError, match="mirror folder does not exist"):
        file_url(remote, tmp_path / "missing")


@pytest.mark.parametrize("as_url", [False, True], ids=["folder", "file-url"])
def test_fetch_copies_every_file_from_a_mirror(mirror, table, tmp_path, as_url):
    out = tmp_path / "downloads"
    paths = fetch_files(table, out, mirror.as_uri() if as_url else mirror, progress=False)
    assert [path.name for path in paths] == [remote.name for remote in table]
    assert all(path.read_bytes() == (mirror / path.name).read_bytes() for path in paths)
    assert not list(out.glob("*.part"))


def test_fetch_skips_files_already_complete(mirror, table, tmp_path):
    out = tmp_path / "downloads"
    fetch_files(table, out, mirror, progress=False)
    stamps = {path.name: path.stat().st_mtime_ns for path in out.iterdir()}
    empty_mirror = tmp_path / "empty"
    empty_mirror.mkdir()
    fetch_files(table, out, empty_mirror, progress=False)
    assert stamps == {path.name: path.stat().st_mtime_ns for path in out.iterdir()}


def test_fetch_fails_clearly_on_a_checksum_mismatch_and_keeps_nothing(mirror, table, tmp_path):
    wrong = (*table[:2], RemoteFile("cvind.mat", 7, "0" * 32))
    out = tmp_path / "downloads"
    with pytest.raises(DownloadError, match=r"cvind\.mat: md5 checksum mismatch, expected 0{32}"):
        fetch_files(wrong, out, mirror, progress=False)
    assert not (out / "cvind.mat").exists() and not (out / "cvind.mat.part").exists()


def test_a_present_file_with_a_wrong_checksum_is_replaced_by_a_good_copy(mirror, table, tmp_path):
    out = tmp_path / "downloads"
    out.mkdir()
    (out / "cvind.mat").write_bytes(b"half a download")
    fetch_files(table, out, mirror, progress=False)
    assert md5(out / "cvind.mat") == table[-1].md5


def test_a_file_without_a_known_checksum_is_fetched_then_kept(mirror, tmp_path):
    unchecked = (RemoteFile("cvind.mat", 7, None),)
    out = tmp_path / "downloads"
    with pytest.warns(UserWarning, match="(?i)not verified"):
        fetch_files(unchecked, out, mirror, progress=False)
    (out / "cvind.mat").write_bytes(b"kept as it is")
    fetch_files(unchecked, out, mirror, progress=False)
    assert (out / "cvind.mat").read_bytes() == b"kept as it is"


def test_a_file_missing_from_the_mirror_is_reported_by_address(mirror, tmp_path):
    with pytest.raises(DownloadError, match=r"absent\.zip: download failed"):
        fetch_files((RemoteFile("absent.zip", 9, "0" * 32),), tmp_path / "downloads", mirror, progress=False)


def test_download_command_fetches_then_prepares_with_the_author_folds(mirror, table, tmp_path, monkeypatch):
    monkeypatch.setattr(download, "FIGSHARE_FILES", table)
    out = tmp_path / "dataset"
    assert run_download("--out", out, "--mirror", mirror) == 0
    datalist = json.loads((out / "datalist.json").read_text())
    folds = read_cvind(mirror / "cvind.mat")
    for name, expected in (("training", {1, 2, 3}), ("validation", {4}), ("test", {5})):
        assert {int(folds[int(entry["slice_id"]) - 1]) for entry in datalist[name]} == expected
    assert len(list((out / "raw").glob("*.mat"))) == 20


def test_download_command_refuses_files_that_differ_from_the_published_ones(mirror, tmp_path, capsys):
    out = tmp_path / "dataset"
    assert run_download("--out", out, "--mirror", mirror) == 1
    err = capsys.readouterr().err
    assert f"{FIGSHARE_FILES[0].name}: md5 checksum mismatch, expected {FIGSHARE_FILES[0].md5}" in err
    assert not (out / "datalist.json").exists()


@pytest.mark.parametrize("kind", ["pipe", "device", "folder"])
def test_a_mirror_entry_that_is_no_regular_file_is_refused_before_reading(tmp_path, kind, bounded_child):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    remote = FIGSHARE_FILES[-1]
    entry = mirror / remote.name
    if kind == "pipe":
        os.mkfifo(tmp_path / "fifo")
        entry.symlink_to(tmp_path / "fifo")
    elif kind == "device":
        entry.symlink_to("/dev/zero")
    else:
        entry.mkdir()
    with pytest.raises(DownloadError, match=f"^{entry}: not a regular file"):
        fetch_files([remote], tmp_path / "out", mirror, progress=False)
    assert not any((tmp_path / "out").iterdir())


@contextmanager
def serving(
    body: bytes, announce_length: bool = True, pause_at: int | None = None
) -> Iterator[tuple[str, threading.Event]]:
    """A local HTTP server answering every GET with ``body``, holding back what follows ``pause_at`` until the
    yielded event is set; yields its base URL and that event."""
    release = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            if announce_length:
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            split = len(body) if pause_at is None else pause_at
            self.wfile.write(body[:split])
            self.wfile.flush()
            release.wait(60)
            self.wfile.write(body[split:])

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.handle_error = lambda request, address: None  # a client that stops reading is what some tests want
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", release
    finally:
        release.set()
        server.shutdown()
        server.server_close()


@pytest.fixture
def no_proxy(monkeypatch):
    """Requests to the local server go straight to it."""
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("NO_PROXY", "*")


def test_a_download_is_written_as_name_part_in_the_download_folder_and_nowhere_else(tmp_path, monkeypatch, no_proxy):
    temporary = tmp_path / "temporary"
    temporary.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    body = os.urandom(3 << 20)
    remote = RemoteFile("cvind.mat", 7, hashlib.md5(body).hexdigest())
    out = tmp_path / "downloads"
    part = out / "cvind.mat.part"
    with serving(body, pause_at=2 << 20) as (url, release):
        worker = threading.Thread(target=fetch_files, args=([remote], out, url), kwargs={"progress": False})
        worker.start()
        deadline = time.monotonic() + 20
        while not (part.is_file() and part.stat().st_size >= 1 << 20) and time.monotonic() < deadline:
            time.sleep(0.05)
        staged_beside_the_target = part.is_file() and part.stat().st_size >= 1 << 20
        written_elsewhere = list(temporary.rglob("*"))
        release.set()
        worker.join(60)
    assert staged_beside_the_target and written_elsewhere == []
    assert (out / "cvind.mat").read_bytes() == body and not part.exists()


@pytest.mark.parametrize("announced", [True, False], ids=["announced", "endless"])
def test_a_download_larger_than_the_bound_ends_in_one_line_and_leaves_nothing(
    tmp_path, monkeypatch, no_proxy, announced
):
    monkeypatch.setattr(download, "MAX_FILE_BYTES", 1 << 20)
    remote = RemoteFile("cvind.mat", 7, "0" * 32)
    out = tmp_path / "downloads"
    with serving(bytes(4 << 20), announce_length=announced) as (url, _):
        with pytest.raises(DownloadError, match=f"^{url}/cvind.mat: .*more than the 1048576 bytes") as caught:
            fetch_files([remote], out, url, progress=False)
    assert len(str(caught.value).splitlines()) == 1
    assert not any(out.iterdir())


def test_a_download_shows_its_progress_in_lines_when_asked(mirror, table, tmp_path, capsys):
    fetch_files(table[-1:], tmp_path / "downloads", mirror.as_uri(), progress=True)
    lines = capsys.readouterr().err.splitlines()
    assert lines and lines[-1] == "cvind.mat: 100%"


@pytest.mark.parametrize("kind", ["pipe", "device"])
def test_a_file_url_mirror_naming_no_regular_file_is_refused_before_reading(tmp_path, kind, bounded_child):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    entry = mirror / FIGSHARE_FILES[0].name
    if kind == "pipe":
        os.mkfifo(entry)
    else:
        entry.symlink_to("/dev/zero")
    out = tmp_path / "dataset"
    command = [sys.executable, "-m", "pipeline", "download", "--out", str(out), "--mirror", mirror.as_uri()]
    # In a child with a deadline and a file size limit: before the check, a pipe blocked for ever and /dev/zero
    # was written into the temporary folder without end.
    result = bounded_child(command)
    expected = "a named pipe" if kind == "pipe" else "a character device"
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        f"error: {entry.as_uri()}: not a regular file ({expected}); refused before reading it"
    )
    assert not any((out / "downloads").iterdir())
