"""Helpers shared by the advisory tests: `pip list --format json` files and OSV zips."""

import json
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

PipList = Callable[[Mapping[str, str]], Path]


@pytest.fixture
def pip_list(tmp_path: Path) -> PipList:
    """Writes an installed-packages listing in `pip list --format json` form."""

    def write(installed: Mapping[str, str]) -> Path:
        path = tmp_path / "pip-list.json"
        entries = [{"name": name, "version": version} for name, version in installed.items()]
        path.write_text(json.dumps(entries))
        return path

    return write


OsvExport = Callable[[Sequence[Mapping[str, Any]]], Path]


@pytest.fixture
def osv_export(tmp_path: Path) -> OsvExport:
    """Writes an OSV export shaped like OSV's PyPI/all.zip: one JSON file per record."""

    def write(records: Sequence[Mapping[str, Any]]) -> Path:
        path = tmp_path / "all.zip"
        with zipfile.ZipFile(path, "w") as bundle:
            for record in records:
                bundle.writestr(f"{record['id']}.json", json.dumps(record))
        return path

    return write
