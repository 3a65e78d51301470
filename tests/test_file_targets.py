"""What ``atomic_write`` (and so every writer) does with what it finds at the target path (issue 11, items 1, 3, 4).

One rule for every writer: a regular file is replaced atomically, keeping its mode; a
symlink is written through, the link kept; a FIFO, a character device or ``-`` is written as
a stream; a directory, a read-only file, a parent that is a file, an unwritable directory
and a full disk are refused with one ``FileWriteError`` line. Everything happens in a
temporary directory: FIFOs, device nodes and mounts are made there, never real /dev paths.
"""

import errno
import os
import re
import stat
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import torch
from _fs import IS_ROOT, file_size_limit, full_dir, readonly_dir

from hookedmlp import FileWriteError, HookedMLP, MLPConfig, SteeringVector
from hookedmlp.files.atomic import atomic_save, atomic_write, check_writable
from hookedmlp.files.safe_load import safe_load

REPO = Path(__file__).resolve().parents[1]


def _write(path, text: str = "new") -> None:
    with atomic_write(path, "w") as f:
        f.write(text)


def _small_model(seed: int = 0) -> HookedMLP:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return HookedMLP(MLPConfig(d_in=16, d_hidden=(8,), d_out=3))


# -- symlinks are written through --------------------------------------------------------------


def test_a_symlink_is_written_through_and_kept(tmp_path):
    (tmp_path / "run3.pt").write_text("old")
    (tmp_path / "latest.pt").symlink_to("run3.pt")
    _write(tmp_path / "latest.pt")
    assert (tmp_path / "latest.pt").is_symlink() and os.readlink(tmp_path / "latest.pt") == "run3.pt"
    assert (tmp_path / "run3.pt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.pt", "run3.pt"]


def test_a_checkpoint_saved_through_a_chain_of_links_replaces_the_real_file(tmp_path):
    (tmp_path / "runs").mkdir()
    _small_model(0).save(tmp_path / "runs" / "run3.pt")
    (tmp_path / "mid.pt").symlink_to("runs/run3.pt")
    (tmp_path / "latest.pt").symlink_to(tmp_path / "mid.pt")  # absolute, then relative
    new = _small_model(1)
    new.save(tmp_path / "latest.pt")
    assert (tmp_path / "latest.pt").is_symlink() and (tmp_path / "mid.pt").is_symlink()
    loaded = HookedMLP.load(tmp_path / "runs" / "run3.pt")
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), new.state_dict().values()))
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["run3.pt"]  # the temp file was beside the real one


def test_a_dangling_symlink_creates_the_file_it_names(tmp_path):
    (tmp_path / "latest.pt").symlink_to("sub/run4.pt")
    _write(tmp_path / "latest.pt")
    assert (tmp_path / "latest.pt").is_symlink()
    assert (tmp_path / "sub" / "run4.pt").read_text() == "new"


def test_a_symlink_to_a_directory_is_refused(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "link").symlink_to("d")
    with pytest.raises(FileWriteError, match=r"cannot write '.*link': it is a directory; pass a file path"):
        _write(tmp_path / "link")


# -- streams -----------------------------------------------------------------------------------


def _reader(path: Path, got: list) -> threading.Thread:
    t = threading.Thread(target=lambda: got.append(open(path, "rb").read()), daemon=True)
    t.start()
    return t


def test_a_fifo_is_written_as_a_stream(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    got: list = []
    reader = _reader(fifo, got)
    SteeringVector({"layer0.post": torch.arange(4.0)}).save(fifo)
    reader.join(timeout=30)
    assert stat.S_ISFIFO(fifo.stat().st_mode)  # still the FIFO, not a regular file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo"]
    (tmp_path / "copy.pt").write_bytes(got[0])
    assert torch.equal(SteeringVector.load(tmp_path / "copy.pt")["layer0.post"], torch.arange(4.0))


def test_a_link_to_a_process_fd_is_written_as_a_stream(tmp_path):
    """``--json /dev/stdout``: /dev/stdout is a link to /proc/self/fd/1. Here a link in tmp to a pipe's fd."""
    r, w = os.pipe()
    link = tmp_path / "stdout"
    link.symlink_to(f"/proc/self/fd/{w}")
    try:
        _write(link, "printed\n")
        os.close(w)
        w = -1
        assert os.read(r, 100) == b"printed\n"
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)
    assert link.is_symlink() and sorted(p.name for p in tmp_path.iterdir()) == ["stdout"]


@pytest.mark.skipif(not IS_ROOT, reason="mknod needs root")
def test_a_character_device_is_written_in_place(tmp_path):
    node = tmp_path / "null"
    os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # a /dev/null, made in the temp dir
    atomic_save({"x": torch.zeros(3)}, node)
    assert stat.S_ISCHR(node.stat().st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["null"]


def test_dash_is_standard_output(capsysbinary):
    with atomic_write("-", "wb") as f:
        f.write(b"bytes\n")
    with atomic_write("-", "w") as f:
        f.write("text\n")
    assert capsysbinary.readouterr().out == b"bytes\ntext\n"


# -- refused targets ---------------------------------------------------------------------------


def test_a_read_only_file_is_refused_and_left_alone(tmp_path):
    path = tmp_path / "m.pt"
    _small_model().save(path)
    before = path.read_bytes()
    path.chmod(0o444)
    message = (
        f"cannot write {str(path)!r}: the file is read-only (mode 444); make it writable (chmod u+w) "
        "or choose another path"
    )
    for attempt in (lambda: _small_model(1).save(path), lambda: _write(path), lambda: check_writable(path)):
        with pytest.raises(FileWriteError, match="^" + re.escape(message) + "$") as info:
            attempt()
        assert info.value.errno == errno.EACCES
    assert path.read_bytes() == before and stat.S_IMODE(path.stat().st_mode) == 0o444
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]


def test_a_replaced_file_keeps_its_mode(tmp_path):
    path = tmp_path / "m.pt"
    path.write_text("old")
    path.chmod(0o600)
    _small_model().save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize("depth", [1, 2])
def test_a_parent_that_is_a_file_is_named(tmp_path, depth):
    (tmp_path / "notes.txt").write_text("a file, not a directory")
    path = tmp_path.joinpath("notes.txt", *["sub"] * (depth - 1), "m.pt")
    expected = (
        f"cannot write {str(path)!r}: {str(tmp_path / 'notes.txt')!r} is a file, not a directory; choose another path"
    )
    for attempt in (lambda: _write(path), lambda: check_writable(path)):
        with pytest.raises(FileWriteError) as info:
            attempt()
        assert str(info.value) == expected
    assert (tmp_path / "notes.txt").read_text() == "a file, not a directory"


def test_an_unwritable_directory_is_named(tmp_path):
    with readonly_dir(tmp_path / "ro") as ro:
        for attempt in (
            lambda: _write(ro / "m.pt"),
            lambda: check_writable(ro / "m.pt"),
            lambda: check_writable(ro / "a" / "m.pt"),
        ):
            with pytest.raises(
                FileWriteError,
                match=rf"cannot write '{ro}/.*m\.pt': the directory '{ro}' is not writable "
                r"\((Read-only file system|Permission denied)\); choose another path",
            ):
                attempt()
        assert list(ro.iterdir()) == []


def test_check_writable_leaves_nothing_behind(tmp_path):
    check_writable(tmp_path / "a" / "b" / "m.pt")
    check_writable(tmp_path / "m.pt")
    assert list(tmp_path.iterdir()) == []  # no directory created, no probe file left


# -- a full disk -------------------------------------------------------------------------------


def test_a_full_disk_keeps_the_old_file_and_says_so(tmp_path):
    with full_dir(tmp_path / "disk", size="64k", fill=False) as disk:
        path = disk / "m.pt"
        _small_model().save(path)
        before = path.read_bytes()
        big = HookedMLP(MLPConfig(d_in=64, d_hidden=(256,), d_out=3))  # ~70 KB: more than the disk holds
        with pytest.raises(FileWriteError) as info:
            big.save(path)
        assert (
            str(info.value) == f"no space left writing {path} (old file kept); free some space or choose another path"
        )
        assert info.value.errno == errno.ENOSPC
        assert path.read_bytes() == before
        assert sorted(p.name for p in disk.iterdir()) == ["m.pt"]  # the temporary file was removed
        with pytest.raises(FileWriteError, match=r"^no space left writing .*new\.pt \(nothing written\)"):
            big.save(disk / "new.pt")


def test_check_writable_sees_a_disk_with_no_space_left(tmp_path):
    with full_dir(tmp_path / "disk") as disk:
        with pytest.raises(FileWriteError, match=rf"^no space left writing {disk}/m\.pt \(nothing written\)"):
            check_writable(disk / "m.pt")


SAVE_UNDER_LIMIT = """
    import sys, torch
    from hookedmlp import HookedMLP, MLPConfig
    from hookedmlp.errors import FileWriteError
    torch.manual_seed(0)
    try:
        HookedMLP(MLPConfig(d_in=784, d_hidden=(256,), d_out=10)).save(sys.argv[1])  # ~800 KB
    except FileWriteError as e:
        print(e, e.errno)
"""


def test_a_file_size_limit_gives_one_line_and_keeps_the_old_file(tmp_path):
    """RLIMIT_FSIZE: the kernel's EFBIG inside torch.save, which torch itself reports as 'unexpected pos'."""
    path = tmp_path / "m.pt"
    _small_model().save(path)
    before = path.read_bytes()
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SAVE_UNDER_LIMIT), str(path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=file_size_limit(100_000),
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (
        f"no space left writing {path}: file size limit reached (ulimit -f, or the file system's largest "
        f"file) (old file kept); free some space or choose another path {errno.EFBIG}\n"
    )
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]
    assert safe_load(path)["format"] == "hookedmlp.checkpoint"


def test_a_writer_error_unrelated_to_the_disk_passes_through(tmp_path):
    with pytest.raises(ZeroDivisionError):
        with atomic_write(tmp_path / "a", "w") as f:
            f.write("x")
            1 / 0
    assert list(tmp_path.iterdir()) == []
