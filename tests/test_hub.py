"""The local Hub speaks enough of the Hub protocol for the plain huggingface_hub client."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import N_SHARDS, REPO, HubDataset, hub_env, shard_path

pytestmark = pytest.mark.hub

CLIENT = r"""
import hashlib, json, os, sys
from huggingface_hub import HfApi, HfFileSystem, hf_hub_download, snapshot_download

repo, shard, offset, length = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
api = HfApi()
out = {}
out["files"] = api.list_repo_files(repo, repo_type="dataset", revision="main")
out["tree"] = {
    f.path: [f.size, f.lfs.sha256 if f.lfs else None, f.blob_id]
    for f in api.list_repo_tree(repo, repo_type="dataset", recursive=True, revision="main")
    if hasattr(f, "size")
}
out["sha"] = api.dataset_info(repo, revision="main").sha
out["sha_default"] = api.dataset_info(repo).sha
out["sha_v1"] = api.dataset_info(repo, revision="v1.0").sha
p = hf_hub_download(repo, shard, repo_type="dataset")
out["hf_hub_download"] = hashlib.sha256(open(p, "rb").read()).hexdigest()
snap = snapshot_download(repo, repo_type="dataset", revision="main", local_dir=sys.argv[5])
out["snapshot"] = {
    os.path.relpath(os.path.join(d, f), snap): hashlib.sha256(open(os.path.join(d, f), "rb").read()).hexdigest()
    for d, _, fs in os.walk(snap) if "/.cache" not in d + "/" for f in fs
}
fs = HfFileSystem()
with fs.open(f"datasets/{repo}/{shard}", "rb") as fh:
    fh.seek(offset)
    out["range"] = fh.read(length).hex()
out["cat_file"] = fs.cat_file(f"datasets/{repo}/{shard}", start=offset, end=offset + length).hex()
with fs.open(f"datasets/{repo}@v1.0/README.md", "rb") as fh:
    out["readme_v1"] = fh.read().decode()
print(json.dumps(out))
"""


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_plain_client(local_hub: HubDataset, tmp_path: Path) -> None:
    shard = shard_path(2)
    offset, length = 123_457, 4_096
    mark = local_hub.hub.log_mark()
    proc = subprocess.run(
        [sys.executable, "-c", CLIENT, REPO, shard, str(offset), str(length), str(tmp_path / "snap")],
        env=hub_env(local_hub.endpoint, tmp_path / "home"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)

    expected_files = {".gitattributes", "README.md", "data/metadata/generators.csv"} | {
        shard_path(i) for i in range(N_SHARDS)
    }
    assert set(out["files"]) == expected_files
    assert out["sha"] == out["sha_default"] == local_hub.commit
    assert out["sha_v1"] == local_hub.v1_commit

    # LFS: sha256 in the tree listing, as on the real Hub; plain files carry their git blob id
    size, sha256, _ = out["tree"][shard]
    local = local_hub.file(shard)
    assert (size, sha256) == (local.stat().st_size, _sha256(local))
    size, sha256, blob_id = out["tree"]["README.md"]
    data = local_hub.file("README.md").read_bytes()
    assert sha256 is None
    assert blob_id == hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()

    assert out["hf_hub_download"] == _sha256(local)
    for path in expected_files:
        assert out["snapshot"][path] == _sha256(local_hub.file(path)), path

    # HfFileSystem range reads get the right bytes (nginx answers them with 206)
    assert bytes.fromhex(out["range"]) == local.read_bytes()[offset : offset + length]
    assert out["cat_file"] == out["range"]
    assert out["readme_v1"] == local_hub.file("README.md", "v1.0").read_text()
    ranged = [e for e in local_hub.hub.entries_since(mark, shard) if e.range != "-"]
    assert ranged and all(e.status == 206 for e in ranged)


def test_access_log_counts_bytes(local_hub: HubDataset) -> None:
    import urllib.request

    path = f"/datasets/{REPO}/resolve/main/{shard_path(1)}"
    mark = local_hub.hub.log_mark()
    req = urllib.request.Request(local_hub.endpoint + path, headers={"Range": "bytes=0-999"})
    with urllib.request.urlopen(req) as resp:
        assert resp.status == 206
        assert len(resp.read()) == 1000
    entries = local_hub.hub.entries_since(mark, shard_path(1))
    assert [(e.status, e.body_bytes_sent, e.range) for e in entries] == [(206, 1000, "bytes=0-999")]
    assert local_hub.hub.bytes_sent(shard_path(1)) >= 1000
