"""scripts/update-advisories' builder, from a small OSV export served over loopback."""

import http.server
import io
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from scripts.advisories import check, update
from scripts.advisories.snapshot import load
from tests.advisories.conftest import OsvExport, PipList

RECORDS = [
    {
        "id": "PYSEC-9999-1",
        "aliases": ["CVE-9999-1"],
        "summary": "prose that must not reach the snapshot",
        "affected": [
            {
                "package": {"ecosystem": "PyPI", "name": "Demo_Pkg"},
                "ranges": [
                    {"type": "GIT", "repo": "https://example.invalid", "events": [{"fixed": "ab"}]},
                    {"type": "ECOSYSTEM", "events": [{"introduced": "1.0"}, {"fixed": "2.0"}]},
                ],
                "versions": ["0.5", "1.0", "1.5"],
            }
        ],
    },
    {
        "id": "GHSA-xxxx-withdrawn",
        "withdrawn": "2025-01-01T00:00:00Z",
        "affected": [
            {
                "package": {"ecosystem": "PyPI", "name": "demo-pkg"},
                "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}]}],
            }
        ],
    },
    {
        "id": "GHSA-other-ecosystem",
        "affected": [
            {
                "package": {"ecosystem": "npm", "name": "demo-pkg"},
                "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}]}],
            }
        ],
    },
    {
        "id": "PYSEC-9999-2",
        "affected": [
            {
                "package": {"ecosystem": "PyPI", "name": "not-installed"},
                "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}]}],
            }
        ],
    },
]


@pytest.fixture
def served(osv_export: OsvExport) -> Iterator[str]:
    """The export on a loopback HTTP server, as the refresh downloads the real one."""
    archive = osv_export(RECORDS)
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(archive.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/{archive.name}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def rebuild(source: str, listing: Path, snapshot: Path) -> str:
    out = io.StringIO()
    args = ["--from", source, "--installed", str(listing), "--snapshot", str(snapshot)]
    assert update.main(args, out=out) == 0
    return out.getvalue()


def test_local_zip_builds_a_snapshot_the_checker_accepts(
    osv_export: OsvExport, pip_list: PipList, tmp_path: Path
) -> None:
    """Guards the refresh path end to end: only installed PyPI packages, withdrawn and foreign
    records dropped, prose dropped, every installed package recorded as looked up."""
    listing = pip_list({"demo-pkg": "2.0", "clean-pkg": "3.1"})
    target = tmp_path / "snapshot.json"
    output = rebuild(str(osv_export(RECORDS)), listing, target)
    assert "2 packages looked up, 1 advisories kept" in output

    snapshot = load(target)
    assert set(snapshot.packages) == {"demo-pkg", "clean-pkg"}
    assert snapshot.packages["clean-pkg"] == ()
    (advisory,) = snapshot.packages["demo-pkg"]
    assert (advisory.id, advisory.aliases) == ("PYSEC-9999-1", ("CVE-9999-1",))
    assert advisory.versions == ("0.5",)  # 1.0 and 1.5 are already inside the range
    assert "prose" not in target.read_text()

    assert check.check(snapshot, {"demo-pkg": "2.0", "clean-pkg": "3.1"}) == []
    flagged = check.check(snapshot, {"demo-pkg": "0.5", "clean-pkg": "3.1"})
    assert [(f.package, f.message.split(" ")[0]) for f in flagged] == [("demo-pkg", "PYSEC-9999-1")]


def test_download_over_http(served: str, pip_list: PipList, tmp_path: Path) -> None:
    """Guards the network path: the export is fetched from a URL, and the source is recorded."""
    target = tmp_path / "snapshot.json"
    rebuild(served, pip_list({"demo-pkg": "1.5"}), target)
    snapshot = load(target)
    assert snapshot.source == f"OSV PyPI export ({served})"
    assert check.check(snapshot, {"demo-pkg": "1.5"})[0].message.startswith("PYSEC-9999-1")
