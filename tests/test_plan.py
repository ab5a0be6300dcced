"""Plan-first downloads (`cfx download` with a selection): real local Hub, cfx run as a subprocess, no mocks.

The module's own Hub serves a synthetic CF-shaped repo (cfx.synth: 8 shards; 0-2 LatDiff only, 3 a
GAN/PixDiff/Other mix, 4 a few GAN rows then real, 5-7 real) with nginx answering every file GET from disk,
so the access log's body bytes are exactly the bytes a download received.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cfx.plan import Coverage, ShardNeed, greedy_cover
from cfx.sources import natural_key
from cfx.synth import make_dataset
from tests.conftest import _hub_or_skip, hub_env
from tests.hubserver import HubUnavailable, LocalHub

REPO = "cfx-tests/plan-synth"
OTHER = "cfx-tests/plan-other"
N = 8
ALWAYS = {"README.md", "data/metadata/generators.csv"}


def shard(i: int) -> str:
    return f"data/HFCF_small_{i}.parquet"


@dataclass
class PlanHub:
    hub: LocalHub
    data: Path  # the synthetic dataset the repo was made from
    commit: str
    other_commit: str

    def file(self, path: str, revision: str = "main", repo: str = REPO) -> Path:
        return self.hub.local_file(repo, path, revision)

    def rows(self) -> pl.DataFrame:
        """Every row's metadata with its shard: the ground truth plans are checked against."""
        frames = []
        for i in range(N):
            cols = ["image_name", "model_name", "architecture", "label", "real_source"]
            df = pl.from_arrow(pq.read_table(self.data / shard(i), columns=cols))
            assert isinstance(df, pl.DataFrame)
            frames.append(df.with_columns(pl.lit(shard(i)).alias("shard")))
        return pl.concat(frames)


@pytest.fixture(scope="module")
def plan_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlanHub]:
    _hub_or_skip()
    data = tmp_path_factory.mktemp("plan-synth")
    make_dataset(data, shards=N, rows_per_shard=30, seed=0, scale=0.25)
    files: dict[str, Path] = {p: data / p for p in ALWAYS}
    files.update({shard(i): data / shard(i) for i in range(N)})
    hub = LocalHub(tmp_path_factory.mktemp("plan-hub"), files_from_nginx=True)
    try:
        commit = hub.create_repo(REPO, files)
        other = hub.create_repo(
            OTHER, {"README.md": b"other\n", shard(0): data / shard(0), shard(1): data / shard(1)}
        )
        hub.start()
    except HubUnavailable as exc:
        hub.close()
        if os.environ.get("CFX_REQUIRE_HUB") == "1":
            pytest.fail(f"local Hub did not start: {exc}", pytrace=False)
        pytest.skip(f"local Hub did not start: {exc}")
    try:
        yield PlanHub(hub, data, commit, other)
    finally:
        hub.close()


Run = Callable[..., subprocess.CompletedProcess[bytes]]


@pytest.fixture
def run(plan_hub: PlanHub, tmp_path: Path) -> Run:
    """``python -m cfx ARGS`` against the module's Hub (bytes in and out, for piped manifests)."""
    home = tmp_path / "hf-home"

    def go(*args: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [sys.executable, "-m", "cfx", *args],
            env=hub_env(plan_hub.hub.endpoint, home),
            input=input,
            capture_output=True,
            timeout=120,
            cwd=tmp_path,
        )

    return go


def ok_json(proc: subprocess.CompletedProcess[bytes]) -> dict:
    assert proc.returncode == 0, proc.stderr.decode()
    return json.loads(proc.stdout)


def downloaded(out: Path) -> set[str]:
    if not out.exists():
        return set()
    return {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and ".cfx" not in p.parts}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def whole_file_gets(hub: LocalHub, mark: int) -> list[tuple[str, int]]:
    return [
        (e.path, e.body_bytes_sent)
        for e in hub.entries_since(mark, "/resolve/")
        if e.method == "GET" and e.range == "-"
    ]


GENS = ["StyleGAN2", "ProGAN"]


@pytest.mark.hub
def test_generators_plan_then_download_only_those_shards(plan_hub: PlanHub, run: Run, tmp_path: Path) -> None:
    rows = plan_hub.rows()
    wanted = rows.filter((pl.col("label") == 1) & pl.col("model_name").is_in(GENS))
    need = sorted(set(wanted["shard"]))
    assert 1 < len(need) < N  # the data makes this a real choice
    out = tmp_path / "out"
    args = ("download", REPO, "--out", str(out), "--generators", ",".join(GENS), "--labels", "generated")

    # --dry-run: the plan, from range reads of the metadata only; nothing downloaded
    mark = plan_hub.hub.log_mark()
    plan = ok_json(run(*args, "--dry-run", "--json"))
    assert downloaded(out) == set()
    assert whole_file_gets(plan_hub.hub, mark) == []
    assert plan["commit"] == plan_hub.commit
    assert [s["shard"] for s in plan["shards"]] == need
    per_shard = dict(wanted.group_by("shard").len().iter_rows())
    assert {s["shard"]: s["rows"] for s in plan["shards"]} == per_shard
    assert all(s["of"] == 30 and s["chosen"] for s in plan["shards"])
    assert {s["shard"]: s["bytes"] for s in plan["shards"]} == {
        s: plan_hub.file(s).stat().st_size for s in need
    }
    files = {f["path"]: f["size"] for f in plan["download"]["files"]}
    assert set(files) == set(need) | ALWAYS
    # a cheaper alternative: fewer shards that still hold every requested generator
    alt = plan["alternative"]
    assert alt is not None and len(alt["shards"]) < len(need)
    assert set(wanted.filter(pl.col("shard").is_in(alt["shards"]))["model_name"]) == set(GENS)
    assert alt["missing"] == [] and alt["by_kind"]["generator"] == {"covered": 2, "requested": 2}

    # the download: the index comes from the cache, only the planned files are fetched, byte for byte
    mark = plan_hub.hub.log_mark()
    text = run(*args)
    assert text.returncode == 0, text.stderr.decode()
    assert "Cheaper: 1 shard" in text.stdout.decode() and "Downloaded" in text.stdout.decode()
    resolve = [e for e in plan_hub.hub.entries_since(mark, "/resolve/") if e.method == "GET"]
    assert sorted(e.path for e in resolve) == sorted(
        f"/datasets/{REPO}/resolve/{plan_hub.commit}/{p}" for p in files
    )
    assert (
        sum(e.body_bytes_sent for e in resolve) == sum(files.values()) == plan["download"]["bytes_to_fetch"]
    )
    assert downloaded(out) == set(files)
    for p in files:
        assert (out / p).read_bytes() == plan_hub.file(p).read_bytes()

    # again: everything verified, nothing fetched
    mark = plan_hub.hub.log_mark()
    again = ok_json(run(*args, "--json"))
    assert again["result"]["files_skipped"] == len(files) and whole_file_gets(plan_hub.hub, mark) == []


SELECTION = ("--architectures", "GAN", "--real-sources", "Forchheim,IMD2020")


@pytest.mark.hub
def test_shards_and_include_narrow_and_extend_a_selection(
    plan_hub: PlanHub, run: Run, tmp_path: Path
) -> None:
    rows = plan_hub.rows()
    gen = rows.filter((pl.col("label") == 1) & pl.col("model_name").is_in(GENS))
    everywhere = sorted(set(gen["shard"]), key=natural_key)
    assert len(everywhere) >= 2
    numbers = [int(s.rsplit("_", 1)[1].split(".")[0]) for s in everywhere[:1]]
    numbers += [i for i in range(N) if shard(i) not in everywhere][:1]  # a shard without such rows
    among = [shard(i) for i in numbers]
    wanted = gen.filter(pl.col("shard").is_in(among))
    need = sorted(set(wanted["shard"]), key=natural_key)
    spec = ",".join(map(str, numbers))
    extra = next(shard(i) for i in range(N) if i not in numbers)  # fetched only because --include names it
    out = tmp_path / "out"
    args = ("download", REPO, "--out", str(out), "--generators", ",".join(GENS), "--labels", "generated")
    mark = plan_hub.hub.log_mark()
    result = ok_json(
        run(*args, "--shards", spec, "--allow-missing", "--include", extra, "--json", "--subset-out", "sub")
    )
    assert sorted((s["shard"] for s in result["shards"]), key=natural_key) == need
    assert sum(s["rows"] for s in result["shards"]) == wanted.height
    files = set(need) | ALWAYS | {extra}
    resolve = [
        e for e in plan_hub.hub.entries_since(mark, "/resolve/") if e.method == "GET" and e.range == "-"
    ]
    assert {e.path.split(f"{plan_hub.commit}/", 1)[1] for e in resolve} == files
    assert downloaded(out) == files
    sub = pl.from_arrow(pq.read_table(tmp_path / "sub" / "data"))
    assert isinstance(sub, pl.DataFrame)
    assert sorted(sub["image_name"].to_list()) == sorted(wanted["image_name"].to_list())


@pytest.mark.hub
def test_subset_out_equals_cfx_subset_of_a_full_copy(plan_hub: PlanHub, run: Run, tmp_path: Path) -> None:
    full, part = tmp_path / "full", tmp_path / "part"
    ok_json(run("download", REPO, "--out", str(full), "--json"))
    ref = run("subset", str(full), "--out", str(tmp_path / "s1"), *SELECTION)
    assert ref.returncode == 0, ref.stderr.decode()

    res = ok_json(
        run("download", REPO, "--out", str(part), *SELECTION, "--subset-out", str(tmp_path / "s2"), "--json")
    )
    chosen = [s["shard"] for s in res["shards"] if s["chosen"]]
    assert downloaded(part) == set(chosen) | ALWAYS
    assert len(chosen) < N  # shards without GAN or those sources stayed on the Hub
    assert res["subset"]["rows"] == sum(s["rows"] for s in res["shards"])

    def table(folder: Path):  # type: ignore[no-untyped-def]
        return pq.ParquetDataset(sorted(glob.glob(str(folder / "data" / "*.parquet")))).read()

    a, b = table(tmp_path / "s1"), table(tmp_path / "s2")
    assert a.num_rows == b.num_rows > 0
    assert a.equals(b)  # same rows, same order, same metadata and image bytes

    def key(t):  # type: ignore[no-untyped-def]
        return sorted(zip(t["image_name"].to_pylist(), map(sha256, t["image_data"].to_pylist()), strict=True))

    assert key(a) == key(b)
    # and they are the rows the selection names in the source
    rows = plan_hub.rows()
    expected = rows.filter(
        ((pl.col("label") == 1) & (pl.col("architecture") == "GAN"))
        | ((pl.col("label") == 0) & pl.col("real_source").is_in(["Forchheim", "IMD2020"]))
    )
    assert sorted(b["image_name"].to_pylist()) == sorted(expected["image_name"].to_list())


@pytest.mark.hub
def test_budget_picks_fewer_shards_and_reports_coverage(plan_hub: PlanHub, run: Run, tmp_path: Path) -> None:
    rows = plan_hub.rows()
    gen = rows.filter((pl.col("label") == 1) & pl.col("architecture").is_in(["GAN", "PixDiff"]))
    need = sorted(set(gen["shard"]))
    sizes = {s: plan_hub.file(s).stat().st_size for s in need}
    budget = max(sizes.values())  # room for one shard, not two
    assert sum(sizes.values()) > budget and 2 * min(sizes.values()) > budget
    out = tmp_path / "out"
    args = ("download", REPO, "--out", str(out), "--architectures", "GAN,PixDiff", "--labels", "generated")
    res = ok_json(run(*args, "--budget", str(budget), "--json"))
    picked = [s["shard"] for s in res["shards"] if s["chosen"]]
    assert len(picked) == 1 and res["budget"] == budget
    assert downloaded(out) == set(picked) | ALWAYS
    # the pick is the shard covering most generators+architectures per byte, and the report says so
    values = {
        s: set(gen.filter(pl.col("shard") == s)["model_name"])
        | {f"a:{a}" for a in gen.filter(pl.col("shard") == s)["architecture"]}
        for s in need
    }
    assert picked[0] == max(need, key=lambda s: len(values[s]) / sizes[s])
    requested = set().union(*values.values())
    cov = res["budget_plan"]
    assert (cov["covered"], cov["requested"]) == (len(values[picked[0]]), len(requested))
    assert cov["covered"] < cov["requested"] and cov["missing"]
    assert cov["rows"] == res["chosen"]["rows"] == gen.filter(pl.col("shard") == picked[0]).height
    assert res["result"]["bytes_downloaded"] == sizes[picked[0]] + sum(
        plan_hub.file(p).stat().st_size for p in ALWAYS
    )
    # the text plan names the budget, the coverage and the skipped shards
    text = run(*args, "--budget", str(budget), "--dry-run")
    assert text.returncode == 0, text.stderr.decode()
    shown = text.stdout.decode()
    mine = gen.filter(pl.col("shard") == picked[0])
    g, a = (len(set(mine[c])) for c in ("model_name", "architecture"))
    g_all, a_all = (len(set(gen[c])) for c in ("model_name", "architecture"))
    assert f"Budget {budget / 1e6:,.1f} MB: 1 of {len(need)} shards" in shown
    assert f"covers generators {g}/{g_all}, architectures {a}/{a_all}" in shown
    assert "skip (over --budget)" in shown


@pytest.mark.hub
def test_budget_smaller_than_any_shard_is_a_usage_error(plan_hub: PlanHub, run: Run, tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = run("download", REPO, "--out", str(out), "--architectures", "GAN", "--budget", "10kB")
    assert r.returncode == 2, r.stderr.decode()
    err = r.stderr.decode()
    assert "--budget 10.0 kB is smaller than any shard the selection needs" in err
    assert "raise --budget to at least" in err and "Traceback" not in err
    assert downloaded(out) == set()
    r = run("download", REPO, "--out", str(out), "--budget", "lots")
    assert r.returncode == 2 and "--budget 'lots' is not a size" in r.stderr.decode()


@pytest.mark.hub
def test_manifest_on_stdin_is_fetched_at_its_commit(plan_hub: PlanHub, run: Run, tmp_path: Path) -> None:
    sliced = run("slice", f"hf://datasets/{OTHER}", "--where", "label = 1", "--head", "5")
    assert sliced.returncode == 0, sliced.stderr.decode()
    old = plan_hub.other_commit
    # the repo moves on after the manifest was made: shard 0 changes on main
    new = plan_hub.hub.commit_files(OTHER, {shard(0): plan_hub.data / shard(2)}, message="replace shard 0")
    try:
        out = tmp_path / "out"
        res = ok_json(
            run(
                "download",
                OTHER,
                "--out",
                str(out),
                "--manifest",
                "-",
                "--subset-out",
                str(tmp_path / "s"),
                "--json",
                input=sliced.stdout,
            )
        )
        assert res["commit"] == old and res["from_manifest"]
        assert [s["shard"] for s in res["shards"]] == [shard(0)] and res["shards"][0]["of"] is None
        assert downloaded(out) == {shard(0), "README.md"}
        assert (out / shard(0)).read_bytes() == plan_hub.file(shard(0), old, OTHER).read_bytes()
        assert (out / shard(0)).read_bytes() != plan_hub.file(shard(0), new, OTHER).read_bytes()
        written = pq.read_table(tmp_path / "s" / "data" / "train-00000-of-00001.parquet")
        first = pq.read_table(plan_hub.data / shard(0)).slice(0, 5)
        assert written["image_name"].to_pylist() == first["image_name"].to_pylist()
        assert written["image_data"].to_pylist() == first["image_data"].to_pylist()
    finally:
        plan_hub.hub.commit_files(OTHER, {shard(0): plan_hub.data / shard(0)}, message="restore shard 0")


@pytest.mark.hub
def test_bad_manifests_and_option_mixes(plan_hub: PlanHub, run: Run, tmp_path: Path) -> None:
    out = tmp_path / "out"
    other = run("slice", f"hf://datasets/{OTHER}", "--head", "3")
    assert other.returncode == 0, other.stderr.decode()
    r = run("download", REPO, "--out", str(out), "--manifest", "-", input=other.stdout)
    assert r.returncode == 2, r.stderr.decode()
    assert f"the manifest is of {OTHER}, not of {REPO}" in r.stderr.decode()
    assert f"cfx download {OTHER} --out DIR" in r.stderr.decode()
    # a manifest of a local folder
    local = run("slice", str(plan_hub.data), "--head", "3")
    r = run("download", REPO, "--out", str(out), "--manifest", "-", input=local.stdout)
    assert r.returncode == 2 and "not at a Hub repo" in r.stderr.decode()
    # a manifest pinned to one commit and --revision naming another
    mine = run("slice", f"hf://datasets/{REPO}", "--head", "3")
    r = run("download", REPO, "--out", str(out), "--manifest", "-", "--revision", "v9", input=mine.stdout)
    assert r.returncode == 2 and "conflicts with the manifest" in r.stderr.decode()
    r = run("download", REPO, "--out", str(out), "--manifest", str(plan_hub.data / shard(0)))
    assert r.returncode == 2 and "is not a cfx manifest" in r.stderr.decode()
    r = run("download", REPO, "--out", str(out), "--generators", "StyleGAN2", "--shards", "0,9-10")
    assert r.returncode == 2 and "--shards: shards 9-10 not in" in r.stderr.decode()
    assert f"this revision has shards 0-{N - 1}" in r.stderr.decode()
    r = run("download", REPO, "--out", str(out), "--generators", "NoSuchGAN")
    assert r.returncode == 2 and "'NoSuchGAN' is not a known generator" in r.stderr.decode()
    r = run("download", REPO, "--out", str(out), "--where", "width > 100000")
    assert r.returncode == 5 and "the selection is empty" in r.stderr.decode()
    assert downloaded(out) == set()


# --- the greedy choice, without a Hub --------------------------------------------------------------
def need(name: str, size: int, values: set[str], rows: int = 1) -> ShardNeed:
    return ShardNeed(name, size, rows, None, frozenset(values))


def test_greedy_cover_prefers_new_values_per_byte() -> None:
    needs = [
        need("a", 100, {"g:1", "g:2"}),
        need("b", 40, {"g:1"}),
        need("c", 40, {"g:2"}),
        need("d", 500, {"g:3"}),
    ]
    full = greedy_cover(needs)
    assert (
        set(full.shards) == {"b", "c", "d"} and full.covered == full.requested
    )  # 2 values for 80 < 100 bytes
    assert greedy_cover(needs, budget=100).shards == ("b", "c")
    assert greedy_cover(needs, budget=50).shards == ("b",)  # c no longer fits
    # what is left of a budget after the coverage buys the most rows per byte
    more = [*needs, need("f", 30, {"g:2"}, rows=9)]
    assert greedy_cover(more, budget=70).shards == ("b", "f")  # coverage: g:2 cheapest in f, then b
    assert greedy_cover(more, budget=110).shards == ("b", "c", "f")  # c adds no value, but rows
    cov = greedy_cover(needs, budget=10)
    assert cov.shards == () and cov.missing == ["g:1", "g:2", "g:3"]
    # a tiny shard with g:1 goes first; then b adds nothing new and is left out
    assert greedy_cover([*needs, need("e", 1, {"g:1"})]).shards == ("c", "d", "e")


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(1, 1000), st.sets(st.sampled_from([f"v{i}" for i in range(8)]), max_size=4)),
        min_size=1,
        max_size=10,
    ),
    st.one_of(st.none(), st.integers(1, 3000)),
)
def test_greedy_cover_properties(shards: list[tuple[int, set[str]]], budget: int | None) -> None:
    needs = [need(f"s{i}", size, values) for i, (size, values) in enumerate(shards)]
    cov: Coverage = greedy_cover(needs, budget)
    chosen = [n for n in needs if n.shard in cov.shards]
    assert cov.bytes == sum(n.size for n in chosen) and (budget is None or cov.bytes <= budget)
    assert cov.covered == frozenset().union(*(n.values for n in chosen)) if chosen else not cov.covered
    if budget is None:
        assert cov.covered == cov.requested  # unbounded: everything is covered
    # maximal: no shard left out would add a value and still fit; with a budget, none would fit at all
    for n in needs:
        if n.shard not in cov.shards and n.values - cov.covered:
            assert budget is not None and cov.bytes + n.size > budget
        if n.shard not in cov.shards and budget is not None:
            assert cov.bytes + n.size > budget


def test_shard_numbers_that_collide_are_refused() -> None:
    from cfx.errors import UsageError
    from cfx.manifest import Manifest
    from cfx.plan import _only_shards

    names = ["data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet"]
    m = Manifest(df=pl.DataFrame({"shard": names, "row": [0, 0]}), root="hf://datasets/o/r@c")
    with pytest.raises(UsageError, match="both end in 2"):
        _only_shards(m, [2], "o/r@c")
    ok = Manifest(df=pl.DataFrame({"shard": [shard(0), shard(1), "data/metadata/x.parquet"]}), root="x")
    assert _only_shards(ok, [1], "o/r").df["shard"].to_list() == [shard(1)]
