"""How much room an unwrapped dump needs, read from the wrapper's own header or trailer, and
the refusal before anything is written when the place has less free space."""

from __future__ import annotations

import gzip
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from restore_tool.errors import BadInput
from restore_tool.restoring import archive
from restore_tool.restoring.archive import check_room, unwrapped_size

DATA = bytes(range(256)) * 4000  # 1,024,000 bytes


@pytest.mark.parametrize("wrapper, argv", [
    ("gzip", None),
    ("zstd", ["zstd", "-q", "-f", "-o"]),
    ("lz4", ["lz4", "-q", "-f", "--content-size"]),
])
def test_the_unwrapped_size_is_what_the_wrapper_says(
        tmp_path: Path, wrapper: str, argv: list[str] | None) -> None:
    plain, packed = tmp_path / "dump", tmp_path / f"dump.{wrapper}"
    plain.write_bytes(DATA)
    if argv is None:
        packed.write_bytes(gzip.compress(DATA))
    elif shutil.which(argv[0]) is None:
        pytest.skip(f"{argv[0]} is not installed")
    else:
        args = [*argv, str(packed), str(plain)] if wrapper == "zstd" else [
            *argv, str(plain), str(packed)]
        subprocess.run(args, check=True)
    assert unwrapped_size(packed, wrapper) == len(DATA)


def test_a_zstd_stream_without_its_size_says_nothing(tmp_path: Path) -> None:
    if shutil.which("zstd") is None:
        pytest.skip("zstd is not installed")
    packed = tmp_path / "dump.zst"
    with packed.open("wb") as out:  # from a pipe, zstd cannot write the content size
        subprocess.run(["zstd", "-q", "-c"], input=DATA, stdout=out, check=True)
    assert unwrapped_size(packed, "zstd") is None


def test_too_little_room_is_one_sentence_before_anything_is_written(tmp_path: Path) -> None:
    work = tmp_path / "restore-tool-work-x"
    work.mkdir()
    with pytest.raises(BadInput, match=r"^Unpacking big.dump.zst needs 1024.0 TiB in "
                       + str(tmp_path) + r", which has [\d.]+ [KMGT]iB free\.") as raised:
        check_room(tmp_path / "big.dump.zst", work, 2 ** 50)
    assert "--work-dir" in str(raised.value.hint)
    assert list(work.iterdir()) == []
    check_room(tmp_path / "small.dump.gz", work, 1024)  # room enough: nothing said


@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_a_zipped_or_tarred_directory_dump_needs_the_room_of_its_members(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    """dvdrental.zip style: the members' stated sizes, summed, against the free space (the
    disk's answer is replaced: a full disk cannot be made here without root)."""
    folder = tmp_path / "src" / "dvdrental"
    folder.mkdir(parents=True)
    (folder / "toc.dat").write_bytes(b"\0" * 10_240)
    (folder / "3001.dat").write_bytes(b"\1" * 51_200)
    packed = Path(shutil.make_archive(str(tmp_path / "dvdrental"), kind, tmp_path / "src"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.setattr(shutil, "disk_usage", lambda _: SimpleNamespace(free=1000))
    refused = pytest.raises(BadInput, match=rf"^Unpacking {packed.name} needs 60.0 KiB in "
                            rf"{tmp_path}, which has 1000 bytes free\.")
    with refused, archive.opened(packed, work):
        pass
    assert list(work.iterdir()) == []
