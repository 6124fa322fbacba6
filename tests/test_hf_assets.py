"""Hugging Face assets: file names resolved from the tree listing at a pinned commit, and SHA-256 verified.

Against a real local HTTP server (tests/httpfault.py) that answers like the Hub's tree API and
``resolve`` URLs.
"""

from __future__ import annotations

import hashlib
import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from httpfault import FaultServer  # noqa: E402

from prism import download  # noqa: E402
from prism.download import AssetError, AssetSpec, fetch, resolve_hf_files, resolve_hf_revision  # noqa: E402
from prism.released import PRISM_HF_REPO, PRISM_RELEASED_CELLS, PRISM_RELEASED_SEEDS, prism_checkpoint_files  # noqa: E402

REV = "0123456789abcdef0123456789abcdef01234567"
BODY = random.Random(3).randbytes(300_000)
SHA256 = hashlib.sha256(BODY).hexdigest()


@pytest.fixture(autouse=True)
def _no_proxy_no_sleep(monkeypatch):
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setattr(download, "_sleep", lambda s: None)


@pytest.fixture
def srv():
    server = FaultServer().start()
    try:
        yield server
    finally:
        server.stop()


def entry(path, data=None, *, lfs=True, kind="file"):
    """One element of the Hub's /api/models/<repo>/tree/<revision>/<folder> answer."""
    if kind == "directory":
        return {"type": "directory", "oid": "d" * 40, "size": 0, "path": path}
    e = {"type": "file", "oid": hashlib.sha1(data).hexdigest(), "size": len(data), "path": path}
    if lfs:
        e["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
    return e


def tree_path(folder, repo=PRISM_HF_REPO, rev=REV):
    return f"/api/models/{repo}/tree/{rev}/{folder}"


def kw(srv, logs=None):
    return {"endpoint": srv.url(""), "retries": 3, "backoff": 0.0, "timeout": 2.0,
            "log": (logs.append if logs is not None else (lambda m: None))}


def test_dated_file_name_resolved_then_downloaded_and_sha256_verified(srv, tmp_path):
    name = "mse-2024-05-17-08-12-30+Fold11.ckpt"
    folder = "ckpt/K562/seed_2"
    srv.add_json(tree_path(folder), [entry(f"{folder}/{name}", BODY), entry(f"{folder}/notes.txt", b"hi", lfs=False)],
                 faults=[("status", 503)])  # a transient failure of the listing is retried
    logs = []
    hf = resolve_hf_files(PRISM_HF_REPO, REV, folder, "mse-*+Fold11.ckpt", name="K562 seed 2", **kw(srv, logs))
    assert hf.path == f"{folder}/{name}" and hf.size == len(BODY) and hf.sha256 == SHA256
    assert hf.url == srv.url(f"/{PRISM_HF_REPO}/resolve/{REV}/{folder}/mse-2024-05-17-08-12-30%2BFold11.ckpt")
    assert any("retry 1/3" in line for line in logs)

    srv.add_file(f"/{PRISM_HF_REPO}/resolve/{REV}/{folder}/mse-2024-05-17-08-12-30%2BFold11.ckpt", BODY)
    dest = tmp_path / "K562" / "seed2.ckpt"
    rec = fetch(hf.spec(), dest, retries=2, backoff=0.0, timeout=2.0, log=logs.append)
    assert dest.read_bytes() == BODY and rec["sha256"] == SHA256 and rec["md5"] == hashlib.md5(BODY).hexdigest()
    assert fetch(hf.spec(), dest, log=logs.append)["md5"] == rec["md5"]  # an existing file is checked again


def test_listing_with_no_or_several_matches_says_what_is_there(srv):
    folder = "ckpt/GM12878/seed_22"
    srv.add_json(tree_path(folder), [entry(f"{folder}/last.ckpt", b"x"), entry(f"{folder}/old", kind="directory")])
    with pytest.raises(AssetError) as err:
        resolve_hf_files(PRISM_HF_REPO, REV, folder, "mse-*+Fold11.ckpt", name="GM12878 seed 22", **kw(srv))
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("GM12878 seed 22: no file in")
    assert "it holds: last.ckpt, old/" in msg

    srv.add_json(tree_path(folder), [entry(f"{folder}/mse-2024-01-01+Fold11.ckpt", b"a"),
                                     entry(f"{folder}/mse-2024-02-02+Fold11.ckpt", b"b")])
    with pytest.raises(AssetError, match=r"2 files in .* match 'mse-\*\+Fold11.ckpt'; it holds: "
                                         r"mse-2024-01-01\+Fold11.ckpt, mse-2024-02-02\+Fold11.ckpt"):
        resolve_hf_files(PRISM_HF_REPO, REV, folder, "mse-*+Fold11.ckpt", name="GM12878 seed 22", **kw(srv))


def test_paged_listing_is_followed(srv):
    folder = "weights"
    srv.add_json(tree_path(folder, repo="a/b"), [entry(f"{folder}/config.json", b"{}", lfs=False)],
                 headers={"Link": f'<{srv.url("/page2")}>; rel="next"'})
    srv.add_json("/page2", [entry(f"{folder}/model.safetensors", BODY)])
    hf = resolve_hf_files("a/b", REV, folder, "*.safetensors", name="b", **kw(srv))
    assert hf.path == "weights/model.safetensors" and hf.sha256 == SHA256
    # a file kept in git itself (no LFS) has a size but no sha256
    small = resolve_hf_files("a/b", REV, folder, "config.json", name="b", **kw(srv))
    assert small.sha256 is None and small.size == 2


def test_root_folder_and_unpinned_revision(srv):
    srv.add_json(f"/api/models/kuleshov-group/caduceus/tree/{REV}", [entry("config.json", b"{}", lfs=False)])
    hf = resolve_hf_files("kuleshov-group/caduceus", REV, "", "config.json", name="cfg", **kw(srv))
    assert hf.url.endswith(f"/kuleshov-group/caduceus/resolve/{REV}/config.json")
    with pytest.raises(AssetError, match=r"revision 'main' of a/b is not a commit hash"):
        resolve_hf_files("a/b", "main", "", "config.json", name="cfg", **kw(srv))


def test_revision_lookup_gives_the_commit_to_pin(srv):
    srv.add_json("/api/models/a/b/revision/main", {"id": "a/b", "sha": REV, "siblings": []})
    assert resolve_hf_revision("a/b", name="b", **kw(srv)) == REV


def test_sha256_mismatch_is_refused_and_nothing_is_left(srv, tmp_path):
    url = srv.add_file("/f.ckpt", BODY)
    dest = tmp_path / "f.ckpt"
    with pytest.raises(AssetError, match=r"verification failed: sha256 [0-9a-f]{64} != expected 0{64} \(pinned\)"):
        fetch(AssetSpec(url=url, size=len(BODY), sha256="0" * 64), dest, retries=0, log=lambda m: None)
    assert not dest.exists() and not dest.with_name("f.ckpt.part").exists()
    fetch(AssetSpec(url=url, sha256=SHA256), dest, log=lambda m: None)
    with pytest.raises(AssetError, match="already exists but its sha256 is"):
        fetch(AssetSpec(url=url, sha256="1" * 64), dest, log=lambda m: None)
    with pytest.raises(AssetError, match="sha256 'xyz' is not 64 hex digits"):
        fetch(AssetSpec(url=url, sha256="xyz"), tmp_path / "g", log=lambda m: None)


def test_all_ten_released_prism_checkpoints_resolve(srv):
    for cell in PRISM_RELEASED_CELLS:
        for seed in PRISM_RELEASED_SEEDS:
            folder = f"ckpt/{cell}/seed_{seed}"
            srv.add_json(tree_path(folder), [entry(f"{folder}/mse-2024-06-{seed % 28 + 1:02d}+Fold11.ckpt", BODY)])
    files = prism_checkpoint_files(REV, **kw(srv))
    assert len(files) == 10 and {f.sha256 for f in files.values()} == {SHA256}
    assert files[("GM12878", 22222)].path.startswith("ckpt/GM12878/seed_22222/mse-")


def test_a_seq2exp_checkpoint_in_the_configured_layout_is_verified_like_any_asset(srv, tmp_path):
    """Seq2Exp's released checkpoints (config/config.yaml weights.seq2exp-authors): resolved in the folder the
    config names, resumed after a connection cut mid-file, and refused when truncated or changed."""
    import yaml

    w = yaml.safe_load((Path(__file__).resolve().parents[1] / "config/config.yaml").read_text())["weights"]
    w = w["seq2exp-authors"]
    repo, folder = w["huggingface"]["repo"], w["per_run"]["folder"].format(cell="K562", seed=2)
    name = "mse-2024-09-30_11-02-41+Fold11.ckpt"
    srv.add_json(tree_path(folder, repo=repo), [entry(f"{folder}/{name}", BODY)])
    logs = []
    hf = resolve_hf_files(repo, REV, folder, w["per_run"]["pattern"], name="seq2exp K562 seed 2", **kw(srv, logs))
    assert hf.path == f"{folder}/{name}" and hf.sha256 == SHA256
    route = f"/{repo}/resolve/{REV}/{folder}/mse-2024-09-30_11-02-41%2BFold11.ckpt"
    srv.add_file(route, BODY, faults=[("drop", 120_000)])  # half-downloaded: the rest is fetched with Range
    dest = tmp_path / "seq2exp-authors" / "K562" / "seed2.ckpt"
    rec = fetch(hf.spec(), dest, retries=2, backoff=0.0, timeout=2.0, log=logs.append)
    assert dest.read_bytes() == BODY and rec["sha256"] == SHA256
    assert any(h.headers.get("range") == "bytes=120000-" for h in srv.hits)

    half = tmp_path / "half.ckpt"  # a file cut short by something else fails its checksum
    half.write_bytes(BODY[: len(BODY) // 2])
    with pytest.raises(AssetError, match=r"half.ckpt: already exists but its sha256 is [0-9a-f]{64}, expected "
                                         + SHA256):
        fetch(hf.spec(), half, log=lambda m: None)
    changed = bytes(b ^ 1 if i == 1000 else b for i, b in enumerate(BODY))  # the same size, one byte changed
    srv.add_file(route, changed)
    with pytest.raises(AssetError, match=r"verification failed: sha256 [0-9a-f]{64} != expected " + SHA256):
        fetch(hf.spec(), tmp_path / "changed.ckpt", retries=0, log=lambda m: None)
    assert not (tmp_path / "changed.ckpt").exists()
