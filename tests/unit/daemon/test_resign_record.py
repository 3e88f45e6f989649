from __future__ import annotations

import json
from pathlib import Path

from pgvip.daemon import resign_record

BOOT = "5a0e1f1c-0000-4000-8000-000000000001"


def test_a_fresh_record_is_taken_once(tmp_path: Path) -> None:
    resign_record.write(tmp_path, 50, "10.0.0.1", 100.0, boot_id=BOOT)
    assert resign_record.take(tmp_path, 50, "10.0.0.1", 100.4, 3.0, boot_id=BOOT) == 100.0
    assert resign_record.take(tmp_path, 50, "10.0.0.1", 100.5, 3.0, boot_id=BOOT) is None
    assert list(tmp_path.iterdir()) == []


def test_records_are_per_vrid_and_source(tmp_path: Path) -> None:
    resign_record.write(tmp_path, 50, "fe80::1", 100.0, boot_id=BOOT)
    assert resign_record.take(tmp_path, 49, "fe80::1", 100.1, 3.0, boot_id=BOOT) is None
    assert resign_record.take(tmp_path, 50, "fe80::2", 100.1, 3.0, boot_id=BOOT) is None
    assert resign_record.take(tmp_path, 50, "fe80::1", 100.1, 3.0, boot_id=BOOT) == 100.0


def test_another_boot_or_an_old_record_is_not_believed(tmp_path: Path) -> None:
    resign_record.write(tmp_path, 50, "10.0.0.1", 100.0, boot_id=BOOT)
    assert resign_record.take(tmp_path, 50, "10.0.0.1", 100.1, 3.0, boot_id="other") is None
    resign_record.write(tmp_path, 50, "10.0.0.1", 100.0, boot_id=BOOT)
    assert resign_record.take(tmp_path, 50, "10.0.0.1", 103.5, 3.0, boot_id=BOOT) is None
    resign_record.write(tmp_path, 50, "10.0.0.1", 100.0, boot_id=BOOT)
    # a clock that went backwards (a record from the future) is not believed either
    assert resign_record.take(tmp_path, 50, "10.0.0.1", 99.0, 3.0, boot_id=BOOT) is None


def test_a_garbled_record_is_ignored_and_removed(tmp_path: Path) -> None:
    path = resign_record.write(tmp_path, 50, "10.0.0.1", 100.0, boot_id=BOOT)
    path.write_text("{not json")
    assert resign_record.take(tmp_path, 50, "10.0.0.1", 100.1, 3.0, boot_id=BOOT) is None
    assert not path.exists()
    path.write_text(json.dumps({"resigned_at": "soon"}))
    assert resign_record.take(tmp_path, 50, "10.0.0.1", 100.1, 3.0, boot_id=BOOT) is None


def test_the_directory_comes_from_systemd(tmp_path: Path) -> None:
    env = {"RUNTIME_DIRECTORY": f"{tmp_path}:/run/other"}
    assert resign_record.record_dir(env) == tmp_path
