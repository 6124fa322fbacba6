"""prism.download against a real local HTTP server (127.0.0.1, ephemeral port) with injected faults.

Every failure test also checks that nothing partial or unverified is left at dest.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for httpfault without a conftest
from httpfault import FaultServer  # noqa: E402

from prism import download  # noqa: E402
from prism.download import AssetError, AssetSpec, fetch  # noqa: E402

MIB = 1 << 20
DATA = random.Random(7).randbytes(3 * MIB + 12345)
MD5 = hashlib.md5(DATA).hexdigest()


@pytest.fixture(autouse=True)
def _no_proxy_no_sleep(monkeypatch):
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    sleeps: list[float] = []
    monkeypatch.setattr(download, "_sleep", sleeps.append)
    return sleeps


@pytest.fixture
def sleeps(_no_proxy_no_sleep):
    return _no_proxy_no_sleep


@pytest.fixture
def srv():
    server = FaultServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def logs():
    return []


def get(spec, dest, logs, **kw):
    kw = {"retries": 5, "backoff": 0.01, "timeout": 2.0, "log": logs.append, **kw}
    return fetch(spec, dest, **kw)


def part_of(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def assert_clean(dest: Path) -> None:
    assert not dest.exists(), "unverified file left at dest"
    assert not part_of(dest).exists(), ".part left behind"
    assert not dest.with_name(dest.name + ".provenance.json").exists()


def assert_ok(dest: Path, rec: dict, data: bytes = DATA) -> None:
    assert dest.read_bytes() == data
    assert not part_of(dest).exists()
    assert rec["md5"] == hashlib.md5(data).hexdigest() and rec["size"] == len(data)
    prov = json.loads(dest.with_name(dest.name + ".provenance.json").read_text())
    assert prov["md5"] == rec["md5"] and prov["url"] == rec["url"]


def one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


# --- transfer faults ------------------------------------------------------------------------


def test_dropped_connection_resumes_with_range(srv, tmp_path, logs):
    url = srv.add_file("/f.bin", DATA, faults=[("drop", MIB + MIB // 2)])
    dest = tmp_path / "res" / "f.bin"
    rec = get(AssetSpec(url, md5=MD5), dest, logs)
    assert_ok(dest, rec)
    hits = srv.hits_for("/f.bin")
    assert len(hits) == 2 and "range" not in hits[0].headers
    start = int(hits[1].headers["range"].removeprefix("bytes=").rstrip("-"))
    assert 0 < start <= MIB + MIB // 2 and hits[1].status == 206
    assert srv.bytes_sent("/f.bin") < 2 * len(DATA)
    assert rec["md5_source"] == "pinned" and rec["retries"] == 1


def test_503_twice_then_ok(srv, tmp_path, logs, sleeps):
    url = srv.add_file("/f.bin", DATA, faults=[("status", 503), ("status", 503)])
    dest = tmp_path / "f.bin"
    rec = get(AssetSpec(url, md5=MD5, size=len(DATA)), dest, logs)
    assert_ok(dest, rec)
    assert [h.status for h in srv.hits_for("/f.bin")] == [503, 503, 200]
    assert sleeps == pytest.approx([0.01, 0.02])  # exponential backoff


def test_gives_up_after_retries(srv, tmp_path, logs, sleeps):
    url = srv.add_file("/f.bin", DATA, faults=[("status", 500)] * 10)
    dest = tmp_path / "f.bin"
    with pytest.raises(AssetError, match="giving up after 3 failed attempts") as exc:
        get(AssetSpec(url, md5=MD5), dest, logs, retries=2)
    one_line(exc)
    assert len(srv.hits_for("/f.bin")) == 3 and len(sleeps) == 2
    assert_clean(dest)


def test_redirect_to_other_path(srv, tmp_path, logs):
    srv.add_file("/new/f.bin", DATA)
    url = srv.add_redirect("/old/f.bin", srv.url("/new/f.bin"))
    dest = tmp_path / "f.bin"
    rec = get(AssetSpec(url, md5=MD5), dest, logs)
    assert_ok(dest, rec)
    assert rec["url"] == url and rec["final_url"] == srv.url("/new/f.bin")


def test_404_fails_fast(srv, tmp_path, logs, sleeps):
    url = srv.url("/missing.bin")
    dest = tmp_path / "missing.bin"
    with pytest.raises(AssetError) as exc:
        get(AssetSpec(url), dest, logs)
    msg = one_line(exc)
    assert "404" in msg and url in msg and str(dest) in msg
    assert len(srv.hits_for("/missing.bin")) == 1 and sleeps == []
    assert_clean(dest)


def test_stalled_transfer_is_retried_and_resumed(srv, tmp_path, logs):
    url = srv.add_file("/f.bin", DATA, faults=[("stall", MIB + 1000, 1.2)])
    dest = tmp_path / "f.bin"
    rec = get(AssetSpec(url, md5=MD5), dest, logs, timeout=0.3)
    assert_ok(dest, rec)
    hits = srv.hits_for("/f.bin")
    assert len(hits) == 2 and hits[1].headers["range"].startswith("bytes=") and hits[1].status == 206
    assert any("timed out" in line.lower() or "timeout" in line.lower() for line in logs)


def test_server_ignoring_range_restarts_cleanly(srv, tmp_path, logs):
    url = srv.add_file("/f.bin", DATA, faults=[("drop", MIB + 7)], ignore_range=True)
    dest = tmp_path / "f.bin"
    rec = get(AssetSpec(url, md5=MD5), dest, logs)
    assert_ok(dest, rec)
    hits = srv.hits_for("/f.bin")
    assert [h.status for h in hits] == [200, 200] and "range" in hits[1].headers
    assert any("ignored the Range" in line for line in logs)


def test_416_on_complete_part_verifies(srv, tmp_path, logs):
    url = srv.add_file("/f.bin", DATA)
    dest = tmp_path / "f.bin"
    part_of(dest).write_bytes(DATA)  # an earlier run got everything but was killed before the rename
    rec = get(AssetSpec(url), dest, logs)
    assert_ok(dest, rec)
    assert [h.status for h in srv.hits_for("/f.bin")] == [416]


def test_416_on_bogus_part_restarts(srv, tmp_path, logs):
    url = srv.add_file("/f.bin", DATA)
    dest = tmp_path / "f.bin"
    part_of(dest).write_bytes(DATA + b"junk")
    rec = get(AssetSpec(url, md5=MD5), dest, logs)
    assert_ok(dest, rec)
    assert [h.status for h in srv.hits_for("/f.bin")] == [416, 200]


def test_corrupt_old_part_is_discarded_once(srv, tmp_path, logs):
    url = srv.add_file("/f.bin", DATA)
    dest = tmp_path / "f.bin"
    part_of(dest).write_bytes(b"\0" * MIB)  # wrong bytes from some earlier run
    rec = get(AssetSpec(url, md5=MD5), dest, logs)
    assert_ok(dest, rec)
    assert [h.status for h in srv.hits_for("/f.bin")] == [206, 200]


# --- metadata -------------------------------------------------------------------------------


def meta(**kw):
    base = {"md5sum": MD5, "file_size": len(DATA), "assembly": "GRCh38", "status": "released",
            "output_type": "fold change over control", "file_format": "bigWig", "accession": "ENCFF000TST"}
    return {**base, **kw}


def test_metadata_supplies_checksum(srv, tmp_path, logs):
    url = srv.add_file("/f.bin", DATA)
    murl = srv.add_json("/files/ENCFF000TST/", meta(status="archived"))
    dest = tmp_path / "f.bin"
    rec = get(AssetSpec(url, metadata_url=murl + "?format=json&frame=object",
                        expect={"assembly": "GRCh38", "output_type": "fold change over control"}), dest, logs)
    assert_ok(dest, rec)
    assert rec["md5_source"] == "metadata" and rec["size_source"] == "metadata"
    assert rec["metadata"]["assembly"] == "GRCh38"


def test_metadata_wrong_md5_fails(srv, tmp_path, logs):
    url = srv.add_file("/f.bin", DATA)
    murl = srv.add_json("/meta", meta(md5sum="0" * 32))
    dest = tmp_path / "f.bin"
    with pytest.raises(AssetError, match="md5") as exc:
        get(AssetSpec(url, metadata_url=murl), dest, logs)
    msg = one_line(exc)
    assert str(dest) in msg and "0" * 32 in msg and MD5 in msg
    assert_clean(dest)


def test_metadata_wrong_size_fails(srv, tmp_path, logs):
    url = srv.add_file("/f.bin", DATA)
    murl = srv.add_json("/meta", meta(file_size=len(DATA) + 1))
    dest = tmp_path / "f.bin"
    with pytest.raises(AssetError, match="size") as exc:
        get(AssetSpec(url, metadata_url=murl), dest, logs)
    msg = one_line(exc)
    assert str(len(DATA) + 1) in msg and str(len(DATA)) in msg
    assert_clean(dest)


def test_metadata_is_retried(srv, tmp_path, logs):
    url = srv.add_file("/f.bin", DATA)
    murl = srv.add_json("/meta", meta(), faults=[("status", 502)])
    dest = tmp_path / "f.bin"
    rec = get(AssetSpec(url, metadata_url=murl), dest, logs)
    assert_ok(dest, rec)
    assert [h.status for h in srv.hits_for("/meta")] == [502, 200]


def test_expect_mismatch_names_the_field(srv, tmp_path, logs):
    url = srv.add_file("/f.bin", DATA)
    murl = srv.add_json("/meta", meta(assembly="hg19"))
    dest = tmp_path / "resources" / "encode" / "ENCFF465GBD.bigWig"
    with pytest.raises(AssetError) as exc:
        get(AssetSpec(url, metadata_url=murl, expect={"assembly": "GRCh38"}), dest, logs)
    assert one_line(exc) == (f"{dest}: metadata field 'assembly' is 'hg19', config expects 'GRCh38' ({murl})")
    assert srv.hits_for("/f.bin") == []
    assert_clean(dest)


@pytest.mark.parametrize("status", ["revoked", "deleted"])
def test_revoked_or_deleted_refused(srv, tmp_path, logs, status):
    url = srv.add_file("/f.bin", DATA)
    murl = srv.add_json("/meta", meta(status=status))
    dest = tmp_path / "f.bin"
    with pytest.raises(AssetError, match=f"status is '{status}'") as exc:
        get(AssetSpec(url, metadata_url=murl), dest, logs)
    one_line(exc)
    assert srv.hits_for("/f.bin") == []
    assert_clean(dest)


# --- lock file ------------------------------------------------------------------------------


def test_trust_on_first_use_lock(srv, tmp_path, logs):
    url = srv.add_file("/f.bin", DATA)
    lock = tmp_path / "downloads.lock.json"
    dest = tmp_path / "resources" / "f.bin"
    rec = get(AssetSpec(url), dest, logs, lock=lock)
    assert_ok(dest, rec)
    assert rec["md5_source"] == "first-use"
    assert json.loads(lock.read_text()) == {"resources/f.bin": {"md5": MD5, "size": len(DATA), "url": url}}

    changed = DATA[:-1] + bytes([DATA[-1] ^ 1])
    srv.add_file("/f.bin", changed)
    dest.unlink()
    dest.with_name(dest.name + ".provenance.json").unlink()
    with pytest.raises(AssetError, match="md5") as exc:
        get(AssetSpec(url), dest, logs, lock=lock)
    new_md5 = hashlib.md5(changed).hexdigest()
    assert one_line(exc) == (f"{dest}: differs from what lock file {lock} pinned: then md5 {MD5}, {len(DATA):,} bytes, "
                             f"{url}; now downloaded md5 {new_md5}, {len(DATA):,} bytes, {url} (.part removed). If the "
                             f"new file is right, accept it with: python -m prism.download accept {dest} --lock {lock}")
    assert_clean(dest)
    assert json.loads(lock.read_text())["resources/f.bin"]["md5"] == MD5

    # the documented command: shows the entry, removes it; the next download is pinned afresh
    p = subprocess.run([sys.executable, "-m", "prism.download", "accept", str(dest), "--lock", str(lock)],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines()[0] == f"removed resources/f.bin from {lock}: md5 {MD5}, {len(DATA):,} bytes, {url}"
    assert json.loads(lock.read_text()) == {}
    rec = get(AssetSpec(url), dest, logs, lock=lock)
    assert_ok(dest, rec, changed)
    assert json.loads(lock.read_text()) == {"resources/f.bin": {"md5": new_md5, "size": len(DATA), "url": url}}
    p = subprocess.run([sys.executable, "-m", "prism.download", "accept", str(tmp_path / "resources/other.bin"),
                        "--lock", str(lock)], capture_output=True, text=True)
    assert p.returncode == 1 and p.stderr.strip() == (f"error: {tmp_path}/resources/other.bin: {lock} has no entry "
                                                      "'resources/other.bin'; nothing to accept")


def test_existing_file_that_differs_from_the_lock_says_how_to_accept_it(tmp_path, logs):
    src = tmp_path / "mirror" / "g.fa.gz"
    src.parent.mkdir()
    src.write_bytes(b"new genome")
    lock = tmp_path / "checksums.lock.json"
    dest = tmp_path / "resources" / "g.fa.gz"
    dest.parent.mkdir()
    dest.write_bytes(b"old genome")
    lock.write_text(json.dumps({"resources/g.fa.gz": {"md5": "1" * 32, "size": 10, "url": src.as_uri()}}))
    with pytest.raises(AssetError) as exc:
        get(AssetSpec(src.as_uri()), dest, logs, lock=lock)
    assert one_line(exc) == (f"{dest}: differs from what lock file {lock} pinned: then md5 {'1' * 32}, 10 bytes, "
                             f"{src.as_uri()}; now the file there has md5 {hashlib.md5(b'old genome').hexdigest()}, "
                             f"10 bytes. If the new file is right, accept it with: python -m prism.download accept {dest}")
    found = []
    assert download.accept(dest, log=found.append)["md5"] == "1" * 32  # the lock file is found above the path
    assert found[1].endswith(f"{dest} is kept: delete it to download the new file")


def test_lock_conflicts_with_metadata_before_download(srv, tmp_path, logs):
    url = srv.add_file("/f.bin", DATA)
    murl = srv.add_json("/meta", meta(md5sum="1" * 32))
    lock = tmp_path / "lock.json"
    lock.write_text(json.dumps({"f.bin": {"md5": MD5, "size": len(DATA), "url": url}}))
    dest = tmp_path / "f.bin"
    with pytest.raises(AssetError, match="lock file") as exc:
        get(AssetSpec(url, metadata_url=murl), dest, logs, lock=lock)
    assert one_line(exc) == (f"{dest}: differs from what lock file {lock} pinned: then md5 {MD5}, {len(DATA):,} bytes, "
                             f"{url}; now its metadata {murl} says md5 {'1' * 32}, {len(DATA):,} bytes, {url}. If the "
                             f"new file is right, accept it with: python -m prism.download accept {dest} --lock {lock}")
    assert srv.hits_for("/f.bin") == []
    assert_clean(dest)


def test_concurrent_lock_updates_from_two_processes(tmp_path):
    src = tmp_path / "mirror"
    src.mkdir()
    n = 12
    for i in range(n * 2):
        (src / f"{i}.csv").write_bytes(f"row,{i}\n".encode() * 100)
    lock = tmp_path / "downloads.lock.json"
    script = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from prism.download import AssetSpec, fetch
        for i in range(int(sys.argv[1]), int(sys.argv[2])):
            url = (Path({str(src)!r}) / f"{{i}}.csv").as_uri()
            fetch(AssetSpec(url), Path({str(tmp_path)!r}) / "out" / f"{{i}}.csv", lock={str(lock)!r},
                  log=lambda m: None)
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script, str(a), str(a + n)]) for a in (0, n)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    entries = json.loads(lock.read_text())
    assert sorted(entries) == sorted(f"out/{i}.csv" for i in range(2 * n))
    for i in range(2 * n):
        assert entries[f"out/{i}.csv"]["md5"] == hashlib.md5((src / f"{i}.csv").read_bytes()).hexdigest()
    assert not list(tmp_path.glob(".*.tmp"))


# --- file://, existing dest, auth ------------------------------------------------------------


def test_file_url(tmp_path, logs):
    src = tmp_path / "mirror" / "genome.fa.gz"
    src.parent.mkdir()
    src.write_bytes(DATA)
    dest = tmp_path / "resources" / "genome.fa.gz"
    rec = get(AssetSpec(src.as_uri(), md5=MD5, size=len(DATA)), dest, logs)
    assert_ok(dest, rec)
    assert rec["bytes_transferred"] == len(DATA)

    # resume from a .part for a local mirror too
    dest2 = tmp_path / "resources" / "again.fa.gz"
    part_of(dest2).write_bytes(DATA[:MIB])
    rec2 = get(AssetSpec(src.as_uri(), md5=MD5), dest2, logs)
    assert_ok(dest2, rec2)
    assert rec2["bytes_transferred"] == len(DATA) - MIB


def test_file_url_wrong_md5_and_missing(tmp_path, logs):
    src = tmp_path / "a.csv"
    src.write_bytes(b"x,y\n1,2\n")
    dest = tmp_path / "out" / "a.csv"
    with pytest.raises(AssetError, match="verification failed") as exc:
        get(AssetSpec(src.as_uri(), md5="f" * 32), dest, logs)
    one_line(exc)
    assert_clean(dest)
    with pytest.raises(AssetError, match="not found") as exc:
        get(AssetSpec((tmp_path / "nope.csv").as_uri()), dest, logs)
    assert_clean(dest)


def test_existing_correct_dest_is_noop(srv, tmp_path, logs):
    url = srv.add_file("/f.bin", DATA)
    dest = tmp_path / "f.bin"
    first = get(AssetSpec(url, md5=MD5), dest, logs)
    mtime = dest.stat().st_mtime_ns
    second = get(AssetSpec(url, md5=MD5), dest, logs)
    assert len(srv.hits_for("/f.bin")) == 1
    assert dest.stat().st_mtime_ns == mtime and second == first


def test_existing_wrong_dest_raises_and_keeps_it(srv, tmp_path, logs):
    url = srv.add_file("/f.bin", DATA)
    dest = tmp_path / "f.bin"
    dest.write_bytes(b"something else")
    with pytest.raises(AssetError, match="delete it") as exc:
        get(AssetSpec(url, md5=MD5), dest, logs)
    one_line(exc)
    assert dest.read_bytes() == b"something else"
    assert srv.hits_for("/f.bin") == []
    dest.write_bytes(DATA[:-1] + b"?")  # same size, different content
    with pytest.raises(AssetError, match="md5"):
        get(AssetSpec(url, md5=MD5, size=len(DATA)), dest, logs)
    assert dest.read_bytes() == DATA[:-1] + b"?"


def test_basic_auth_from_env_not_forwarded_to_other_host(srv, tmp_path, logs, monkeypatch):
    monkeypatch.setenv("TEST_DL_USER", "alice")
    monkeypatch.setenv("TEST_DL_PASS", "s3cret")
    token = "Basic " + base64.b64encode(b"alice:s3cret").decode()
    creds = ("alice", "s3cret")

    # same host: the header survives the redirect
    srv.add_file("/secret/f.bin", DATA, auth=creds)
    url = srv.add_redirect("/dl/f.bin", srv.url("/secret/f.bin"), auth=creds)
    dest = tmp_path / "f.bin"
    rec = get(AssetSpec(url, md5=MD5, auth_env=("TEST_DL_USER", "TEST_DL_PASS")), dest, logs)
    assert_ok(dest, rec)
    assert [h.headers.get("authorization") for h in srv.hits_for("/dl/f.bin") + srv.hits_for("/secret/f.bin")] \
        == [token, token]

    # other host (localhost is not 127.0.0.1): the header is dropped, Range is kept
    srv.add_file("/cloud/g.bin", DATA, faults=[("drop", MIB + 3)])
    url2 = srv.add_redirect("/dl/g.bin", srv.url("/cloud/g.bin", host="localhost"), auth=creds)
    dest2 = tmp_path / "g.bin"
    rec2 = get(AssetSpec(url2, md5=MD5, auth_env=("TEST_DL_USER", "TEST_DL_PASS")), dest2, logs)
    assert_ok(dest2, rec2)
    assert [h.headers.get("authorization") for h in srv.hits_for("/dl/g.bin")] == [token, token]
    cloud = srv.hits_for("/cloud/g.bin")
    assert len(cloud) == 2 and all("authorization" not in h.headers for h in cloud)
    assert cloud[1].headers.get("host", "").startswith("localhost") and "range" in cloud[1].headers
    assert "s3cret" not in dest2.with_name("g.bin.provenance.json").read_text()


def test_missing_credentials_give_a_hint(srv, tmp_path, logs, monkeypatch, sleeps):
    monkeypatch.delenv("TEST_DL_USER", raising=False)
    monkeypatch.delenv("TEST_DL_PASS", raising=False)
    url = srv.add_file("/secret/f.bin", DATA, auth=("alice", "s3cret"))
    dest = tmp_path / "f.bin"
    with pytest.raises(AssetError, match="401.*TEST_DL_USER") as exc:
        get(AssetSpec(url, auth_env=("TEST_DL_USER", "TEST_DL_PASS")), dest, logs)
    one_line(exc)
    assert sleeps == []
    assert_clean(dest)


def test_import_is_light():
    code = "import sys, prism.download; print('urllib.request' in sys.modules, 'requests' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_file_found_by_encode_experiment(tmp_path):
    """The paper's DNase footprints are 'the footprint bigBed of experiment ENCSR000EOT'."""
    from prism.download import resolve_experiment_file

    exp = tmp_path / "experiment.json"
    files = [
        {"accession": "ENCFF001", "output_type": "footprints", "file_format": "bigBed", "assembly": "GRCh38",
         "status": "released"},
        {"accession": "ENCFF002", "output_type": "footprints", "file_format": "bed", "assembly": "GRCh38",
         "status": "released"},
        {"accession": "ENCFF003", "output_type": "footprints", "file_format": "bigBed", "assembly": "GRCh38",
         "status": "revoked"},
    ]
    exp.write_text(json.dumps({"files": files}))
    select = {"output_type": "footprints", "file_format": "bigBed", "assembly": "GRCh38"}
    assert resolve_experiment_file(exp.as_uri(), select, name="fp", log=lambda m: None) == "ENCFF001"
    with pytest.raises(AssetError, match=r"fp: no file of .* match .*hg19"):
        resolve_experiment_file(exp.as_uri(), {**select, "assembly": "hg19"}, name="fp", log=lambda m: None)
    files[1]["file_format"] = "bigBed"
    exp.write_text(json.dumps({"files": files}))
    with pytest.raises(AssetError, match=r"2 files \(ENCFF001, ENCFF002\)"):
        resolve_experiment_file(exp.as_uri(), select, name="fp", log=lambda m: None)
