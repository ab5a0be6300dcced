"""`cfx index` / `cfx stats` on hf:// sources through the real huggingface_hub client and the local Hub."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from cfx.manifest import read_manifest
from tests.conftest import BIG_REPO, N_SHARDS, REPO, HubDataset, RunCfx

pytestmark = pytest.mark.hub


def test_remote_index_matches_local_files(local_hub: HubDataset, run_cfx: RunCfx, tmp_path: Path) -> None:
    out = tmp_path / "remote.parquet"
    r = run_cfx("index", f"hf://datasets/{REPO}", "-o", str(out))
    assert r.returncode == 0, r.stderr
    m = read_manifest(out)
    assert m.root == f"hf://datasets/{REPO}@{local_hub.commit}"  # pinned to the commit main resolved to
    assert sorted(m.shards) == sorted(f"data/HFCF_small_{i}.parquet" for i in range(N_SHARDS))
    for shard, info in m.shards.items():
        local = local_hub.file(shard)
        assert info.size == local.stat().st_size
        assert info.etag and len(info.etag) == 64  # LFS sha256, as on the real Hub
        names = pq.read_table(local, columns=["image_name"]).column(0).to_pylist()
        assert m.df.filter(m.df["shard"] == shard).sort("row")["image_name"].to_list() == names
    assert "data/metadata/generators.csv" not in m.df["shard"].to_list()


def test_remote_stats_and_revision(local_hub: HubDataset, run_cfx: RunCfx) -> None:
    r = run_cfx("stats", f"hf://datasets/{REPO}@v1.0", "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["root"] == f"hf://datasets/{REPO}@{local_hub.v1_commit}"
    assert data["totals"]["shards"] == N_SHARDS - 1
    r = run_cfx("stats", f"hf://datasets/{REPO}/data/HFCF_small_5.parquet", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["totals"]["shards"] == 1


def test_remote_index_reads_under_2_percent(local_hub: HubDataset, run_cfx: RunCfx) -> None:
    """Only the footer and the metadata column chunks cross the network: count what nginx sent."""
    path = local_hub.big_path
    size = local_hub.file(path, repo=BIG_REPO).stat().st_size
    mark = local_hub.hub.log_mark()
    r = run_cfx("index", f"hf://datasets/{BIG_REPO}", "--no-cache", "-o", "big.parquet")
    assert r.returncode == 0, r.stderr
    sent = [e for e in local_hub.hub.entries_since(mark, path) if e.method == "GET"]
    assert sent and all(e.status == 206 for e in sent)  # range reads only, never the whole file
    fetched = sum(e.body_bytes_sent for e in sent)
    assert fetched <= 0.02 * size, f"fetched {fetched:,} of {size:,} bytes"


def test_remote_index_is_cached(local_hub: HubDataset, run_cfx: RunCfx) -> None:
    first = run_cfx("stats", f"hf://datasets/{BIG_REPO}", "--json")
    assert first.returncode == 0, first.stderr
    mark = local_hub.hub.log_mark()
    second = run_cfx("stats", f"hf://datasets/{BIG_REPO}", "--json")
    assert second.returncode == 0 and json.loads(second.stdout) == json.loads(first.stdout)
    assert not [e for e in local_hub.hub.entries_since(mark, local_hub.big_path) if e.method == "GET"]


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("hf://datasets/nobody/nothing", "dataset repo 'nobody/nothing' not found"),
        (f"hf://datasets/{REPO}@no-such-branch", "revision 'no-such-branch' not found in dataset repo"),
        ("hf://models/x/y", "is not a Hub dataset address"),
    ],
)
def test_remote_bad_sources(local_hub: HubDataset, run_cfx: RunCfx, source: str, message: str) -> None:
    r = run_cfx("stats", source)
    assert r.returncode in (2, 4), r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr


def test_remote_unreachable_and_offline(local_hub: HubDataset, run_cfx: RunCfx) -> None:
    r = run_cfx("stats", f"hf://datasets/{REPO}", endpoint="http://127.0.0.1:9")
    assert r.returncode == 4, r.stderr
    assert "HF_ENDPOINT" in r.stderr and "HF_HUB_OFFLINE" in r.stderr and "Traceback" not in r.stderr
    r = run_cfx("stats", f"hf://datasets/{REPO}", env={"HF_HUB_OFFLINE": "1"})
    assert r.returncode == 4, r.stderr
    assert "HF_HUB_OFFLINE is set" in r.stderr
