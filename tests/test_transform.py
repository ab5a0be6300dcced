"""subset --transform / --strip-metadata: the grammar, each transform on real encoded images, determinism,
metadata stripping, the subset integration (schema, manifest, card), bad images and the Grommelt recipe."""

from __future__ import annotations

import functools
import hashlib
import io
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import ExifTags, Image, ImageCms, JpegImagePlugin, PngImagePlugin

from cfx.errors import EmptySelectionError, UsageError
from cfx.load import load_manifest
from cfx.schema import SOURCE_SCHEMA
from cfx.subset import write_subset
from cfx.transform import BadImageError, Pipeline, Resize, parse_step, strip_container
from tests.shards import rows, write_shard

KEY = ("data/s-0.parquet", 7)


# --- images -------------------------------------------------------------------------------------------
def _pixels(w: int = 120, h: int = 80, seed: int = 0) -> Image.Image:
    """A smooth gradient with some texture: JPEG at different qualities gives different bytes."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 / w, y * 255 / h, (x + y) * 127 / (w + h)], axis=-1)
    noisy = base + rng.normal(0, 12, base.shape)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB")


@functools.cache
def _icc() -> bytes:  # cached: a new profile carries its creation time
    return bytes(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())


def _exif() -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "Canon"
    exif.get_ifd(ExifTags.IFD.GPSInfo).update({1: "N", 2: (52.0, 31.0, 0.0)})
    return bytes(exif.tobytes())


def encode(image: Image.Image, fmt: str, **opts: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **opts)
    return buf.getvalue()


def jpeg_with_metadata() -> bytes:
    return encode(
        _pixels(), "JPEG", quality=90, exif=_exif(), icc_profile=_icc(), xmp=b"<x:xmpmeta>gps</x:xmpmeta>"
    )


def png_with_metadata() -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a photo of a cat, Steps: 20")
    info.add_itxt("workflow", '{"nodes": []}')
    return encode(_pixels(), "PNG", pnginfo=info, icc_profile=_icc(), exif=_exif())


def opened(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def huge_png_header(w: int = 100_000, h: int = 100_000) -> bytes:
    """A valid PNG that claims w x h pixels (its IDAT is tiny): only a header check stops it."""

    def chunk(tag: bytes, body: bytes) -> bytes:
        return len(body).to_bytes(4, "big") + tag + body + zlib.crc32(tag + body).to_bytes(4, "big")

    ihdr = w.to_bytes(4, "big") + h.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 10))
        + chunk(b"IEND", b"")
    )


# --- grammar ------------------------------------------------------------------------------------------
GOOD = [
    "jpeg:96",
    "jpeg:75-100",
    "jpeg:90,subsampling=4:4:4",
    "webp:80",
    "webp:lossless",
    "png",
    "resize:min-side=64",
    "resize:max-side=512",
    "resize:0.5",
    "center-crop:32",
    "center-crop:48x32",
    "blur:1.5",
    "noise:3",
]


@pytest.mark.parametrize("spec", GOOD)
def test_good_specs_parse_and_print_back(spec: str) -> None:
    assert parse_step(spec).spec() == spec


@pytest.mark.parametrize(
    "spec",
    ["jpeg", "jpeg:0", "jpeg:101", "jpeg:90-80", "jpeg:q", "jpeg:90,subsampling=4:1:1", "webp:", "png:3",
     "resize:max-side=0", "resize:width=3", "resize:-1", "center-crop:0", "center-crop:3x", "blur:0",
     "noise:x", "sharpen:2", ""],
)  # fmt: skip
def test_bad_specs_name_the_spec_and_the_grammar(spec: str) -> None:
    with pytest.raises(UsageError) as err:
        parse_step(spec)
    assert repr(spec) in err.value.message
    assert "jpeg:Q1-Q2" in err.value.hint and "center-crop:WxH" in err.value.hint


def test_keep_icc_needs_strip_metadata() -> None:
    with pytest.raises(UsageError, match="--keep-icc needs --strip-metadata"):
        Pipeline.parse([], keep_icc=True)


# --- each transform does what it says -----------------------------------------------------------------
SOURCES = {"png": lambda: encode(_pixels(), "PNG"), "jpeg": lambda: encode(_pixels(), "JPEG", quality=85)}


@pytest.mark.parametrize("src", sorted(SOURCES))
@pytest.mark.parametrize(
    ("spec", "fmt", "size"),
    [
        ("jpeg:96", "JPEG", (120, 80)),
        ("webp:80", "WEBP", (120, 80)),
        ("webp:lossless", "WEBP", (120, 80)),
        ("png", "PNG", (120, 80)),
        ("resize:min-side=40", None, (60, 40)),
        ("resize:max-side=60", None, (60, 40)),
        ("resize:max-side=500", None, (120, 80)),  # never enlarges
        ("resize:0.5", None, (60, 40)),
        ("center-crop:32", None, (32, 32)),
        ("center-crop:50x20", None, (50, 20)),
        ("blur:2", None, (120, 80)),
        ("noise:4", None, (120, 80)),
    ],
)
def test_each_spec_gives_the_claimed_format_and_size(
    src: str, spec: str, fmt: str | None, size: tuple[int, int]
) -> None:
    data = SOURCES[src]()
    out = Pipeline.parse([spec]).apply(data, KEY)
    image = opened(out.data)
    want = fmt or {"png": "PNG", "jpeg": "JPEG"}[src]  # no encode step: the source format
    assert (image.format, image.size, image.mode) == (want, size, "RGB")
    assert (out.format, (out.width, out.height), out.mode) == (want, size, "RGB")
    assert out.source_sha256 == hashlib.sha256(data).hexdigest()


def test_webp_lossless_and_png_keep_pixels() -> None:
    data = encode(_pixels(), "PNG")
    for spec in ("webp:lossless", "png"):
        out = Pipeline.parse([spec]).apply(data, KEY)
        assert np.array_equal(np.asarray(opened(out.data)), np.asarray(_pixels()))


def test_blur_and_noise_change_pixels_by_about_sigma() -> None:
    data = encode(_pixels(), "PNG")
    src = np.asarray(_pixels(), dtype=np.float64)
    noisy = np.asarray(opened(Pipeline.parse(["noise:4"]).apply(data, KEY).data), dtype=np.float64)
    assert 3.0 < (noisy - src).std() < 5.0
    blurred = np.asarray(opened(Pipeline.parse(["blur:2"]).apply(data, KEY).data), dtype=np.float64)
    assert np.abs(np.diff(blurred, axis=1)).mean() < 0.5 * np.abs(np.diff(src, axis=1)).mean()


@pytest.mark.parametrize("quality", [1, 30, 65, 75, 96, 100])
@pytest.mark.parametrize("sub", [None, "4:4:4", "4:2:2"])
def test_jpeg_tables_equal_pillows_at_that_quality(quality: int, sub: str | None) -> None:
    spec = f"jpeg:{quality}" + (f",subsampling={sub}" if sub else "")
    out = Pipeline.parse([spec]).apply(encode(_pixels(), "PNG"), KEY)
    got = opened(out.data)
    sampling = {"4:4:4": 0, "4:2:2": 1, None: 2}[sub]
    ref = opened(encode(_pixels(), "JPEG", quality=quality, subsampling=sampling))
    assert got.quantization == ref.quantization  # type: ignore[attr-defined]
    assert JpegImagePlugin.get_sampling(got) == sampling


def test_resize_of_a_jpeg_without_encode_step_keeps_its_tables() -> None:
    data = encode(_pixels(), "JPEG", quality=70, subsampling=0)
    out = opened(Pipeline.parse(["resize:0.5"]).apply(data, KEY).data)
    assert out.quantization == opened(data).quantization  # type: ignore[attr-defined]
    assert JpegImagePlugin.get_sampling(out) == 0


@given(w=st.integers(1, 5000), h=st.integers(1, 5000), n=st.integers(1, 2048))
def test_resize_keeps_aspect_within_one_pixel(w: int, h: int, n: int) -> None:
    for step in (Resize("min-side", n), Resize("max-side", n), Resize("factor", n / 1024)):
        nw, nh = step.size(w, h)
        assert nw >= 1 and nh >= 1
        if min(nw, nh) > 1:
            assert abs(nw - w * nh / h) <= 1 or abs(nh - h * nw / w) <= 1


def test_rgba_palette_and_grey_sources_encode_to_jpeg() -> None:
    rgba = _pixels().convert("RGBA")
    for image, mode in ((rgba, "RGB"), (_pixels().convert("P"), "RGB"), (_pixels().convert("L"), "L")):
        out = Pipeline.parse(["resize:0.5", "jpeg:90"]).apply(encode(image, "PNG"), KEY)
        assert (out.format, out.mode) == ("JPEG", mode)
    assert Pipeline.parse(["noise:3"]).apply(encode(rgba, "PNG"), KEY).mode == "RGBA"


def test_center_crop_larger_than_the_image_is_a_bad_row() -> None:
    with pytest.raises(
        BadImageError, match=r"s-0.parquet row 7: the image is 120x80, smaller than center-crop:100"
    ):
        Pipeline.parse(["center-crop:100"]).apply(encode(_pixels(), "PNG"), KEY)


# --- determinism --------------------------------------------------------------------------------------
def test_random_draws_depend_on_seed_shard_and_row_only() -> None:
    data = encode(_pixels(), "PNG")
    p = Pipeline.parse(["jpeg:30-95", "noise:2"])
    a = p.apply(data, KEY, seed=1)
    assert a == p.apply(data, KEY, seed=1)
    draws = {p.apply(data, ("s", r), seed=1).applied for r in range(40)}
    assert len(draws) > 10  # qualities are drawn per row
    assert {p.apply(data, KEY, seed=s).data for s in range(5)}.__len__() == 5


# --- the bomb guard -----------------------------------------------------------------------------------
def test_bomb_guard_refuses_before_decoding() -> None:
    with pytest.raises(
        BadImageError, match=r"row 7: above the decompression-bomb limit: Image size \(10000000000"
    ):
        Pipeline.parse(["jpeg:90"]).apply(huge_png_header(), KEY)
    with pytest.raises(
        BadImageError, match=r"row 7: 3000x3000 = 9,000,000 pixels is above the decompression-bomb"
    ):
        Pipeline(steps=(), max_pixels=1_000_000).apply(huge_png_header(3000, 3000), KEY)
    with pytest.raises(BadImageError, match="decompression-bomb limit of 1,000"):
        Pipeline(steps=(), strip_metadata=True, max_pixels=1000).apply(encode(_pixels(), "PNG"), KEY)


def test_undecodable_bytes_are_a_bad_row() -> None:
    for data in (b"not an image", encode(_pixels(), "PNG")[:200], b""):
        with pytest.raises(BadImageError, match=r"data/s-0.parquet row 7: "):
            Pipeline.parse(["jpeg:90"]).apply(data, KEY)


# --- metadata -----------------------------------------------------------------------------------------
def _gps(image: Image.Image) -> dict[int, Any]:
    return dict(image.getexif().get_ifd(ExifTags.IFD.GPSInfo))


def test_sources_really_have_metadata() -> None:
    jpg, png = opened(jpeg_with_metadata()), opened(png_with_metadata())
    assert _gps(jpg) and "xmp" in jpg.info and jpg.info.get("icc_profile")
    assert png.text and _gps(png) and png.info.get("icc_profile")  # type: ignore[attr-defined]


@pytest.mark.parametrize("keep_icc", [False, True])
@pytest.mark.parametrize("make", [jpeg_with_metadata, png_with_metadata])
def test_lossless_strip_removes_metadata_and_keeps_pixels(make: Callable[[], bytes], keep_icc: bool) -> None:
    data = make()
    out = Pipeline.parse([], strip_metadata=True, keep_icc=keep_icc).apply(data, KEY)
    image, source = opened(out.data), opened(data)
    assert not image.getexif() and "xmp" not in image.info and not getattr(image, "text", {})
    assert (image.info.get("icc_profile") == _icc()) is keep_icc
    assert np.array_equal(np.asarray(image), np.asarray(source))  # not re-encoded
    assert out.format == source.format and len(out.data) < len(data)


def test_strip_keeps_what_changes_pixels() -> None:
    """PNG transparency (tRNS) and the JPEG Adobe segment stay; so do the decoded pixels."""
    pal = _pixels().convert("P")
    data = encode(pal, "PNG", transparency=3)
    out = opened(strip_container(data))
    assert out.info.get("transparency") == 3
    assert np.array_equal(np.asarray(out.convert("RGBA")), np.asarray(opened(data).convert("RGBA")))
    cmyk = encode(_pixels().convert("CMYK"), "JPEG", quality=90)
    assert np.array_equal(np.asarray(opened(strip_container(cmyk))), np.asarray(opened(cmyk)))


def test_webp_strip() -> None:
    data = encode(_pixels(), "WEBP", quality=80, exif=_exif(), icc_profile=_icc())
    out = opened(strip_container(data))
    assert not out.getexif() and not out.info.get("icc_profile")
    assert np.array_equal(np.asarray(out), np.asarray(opened(data)))
    assert opened(strip_container(data, keep_icc=True)).info.get("icc_profile") == _icc()


@pytest.mark.parametrize("make", [jpeg_with_metadata, png_with_metadata])
def test_reencode_keeps_exif_and_icc_unless_stripped(make: Callable[[], bytes]) -> None:
    kept = opened(Pipeline.parse(["jpeg:90"]).apply(make(), KEY).data)
    assert _gps(kept) and kept.info.get("icc_profile") == _icc()
    stripped = opened(Pipeline.parse(["jpeg:90"], strip_metadata=True).apply(make(), KEY).data)
    assert not stripped.getexif() and not stripped.info.get("icc_profile")
    icc = opened(Pipeline.parse(["png"], strip_metadata=True, keep_icc=True).apply(make(), KEY).data)
    assert not icc.getexif() and not icc.text and icc.info.get("icc_profile") == _icc()  # type: ignore[attr-defined]


# --- through subset -----------------------------------------------------------------------------------
def _dataset(root: Path, images: dict[int, bytes] | None = None, n: int = 12) -> Path:
    """Two shards of real PNGs (tests.shards), some rows replaced by ``images`` (row index in shard 0)."""
    recs = rows(n, label=1)
    for i, data in (images or {}).items():
        recs[i]["image_data"] = data
    write_shard(root / "data" / "s-0.parquet", recs)
    write_shard(root / "data" / "s-1.parquet", rows(n, label=0, start=n))
    return root


def _data_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "data").glob("*.parquet"))}


def test_subset_transform_schema_columns_manifest_and_card(tmp_path: Path) -> None:
    src = _dataset(tmp_path / "src")
    m = load_manifest(str(src))
    res = write_subset(m, tmp_path / "out", transform=Pipeline.parse(["resize:0.5", "jpeg:80"]), seed=3)
    first = next((src / "data").glob("*.parquet"))
    out_file = next((tmp_path / "out" / "data").glob("*.parquet"))
    assert pq.read_schema(out_file).equals(pq.read_schema(first), check_metadata=True)
    assert pq.read_schema(out_file).remove_metadata().equals(SOURCE_SCHEMA)
    t = pq.read_table(tmp_path / "out" / "data")
    for row in t.to_pylist():
        image = opened(row["image_data"])
        assert (image.format, image.size, image.mode) == ("JPEG", (16, 16), "RGB")
        assert (row["format"], row["resolution"], row["mode"]) == ("JPEG", [16, 16], "RGB")
        assert row["image_name"].endswith(".jpg")
    man = pl.read_parquet(tmp_path / "out" / "manifest.parquet")
    assert man.height == res.rows == 24
    assert set(man["source_format"]) == {"PNG"} and set(man["source_resolution"]) == {"[32, 32]"}
    assert set(man["format"]) == {"JPEG"} and set(man["width"]) == {16}
    assert set(man["transform"]) == {"resize:0.5 jpeg:80"}
    assert man["source_image_name"][0].endswith(".png")
    src_bytes = pq.read_table(first).column("image_data").to_pylist()
    assert man["source_sha256"][0] == hashlib.sha256(src_bytes[int(man["source_row"][0])]).hexdigest()
    assert (man["num_bytes"].to_list()) == [len(b) for b in t.column("image_data").to_pylist()]
    card = (tmp_path / "out" / "README.md").read_text()
    assert "## Transforms" in card and "`resize:0.5 jpeg:80` (seed 3" in card
    assert "byte-identical" not in card


def test_subset_is_deterministic_across_runs_and_workers(tmp_path: Path) -> None:
    m = load_manifest(str(_dataset(tmp_path / "src")))
    p = Pipeline.parse(["jpeg:40-95", "noise:2"])
    a = write_subset(m, tmp_path / "a", transform=p, seed=1, workers=1)
    write_subset(m, tmp_path / "b", transform=p, seed=1, workers=2)
    c = write_subset(m, tmp_path / "c", transform=p, seed=2, workers=1)
    assert _data_bytes(tmp_path / "a") == _data_bytes(tmp_path / "b")
    assert _data_bytes(tmp_path / "a") != _data_bytes(tmp_path / "c")
    draws_a, draws_c = a.manifest.df["transform"].to_list(), c.manifest.df["transform"].to_list()
    assert draws_a != draws_c and len(set(draws_a)) > 3


def test_subset_bad_image_stops_or_is_skipped_and_counted(tmp_path: Path) -> None:
    src = _dataset(tmp_path / "src", {3: b"\x89PNG\r\n\x1a\n broken", 5: huge_png_header()})
    m = load_manifest(str(src))
    with pytest.raises(BadImageError, match=r"data/s-0.parquet row 3: cannot decode the image"):
        write_subset(m, tmp_path / "out", transform=Pipeline.parse(["jpeg:90"]))
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob("out.tmp-*"))
    for order in ("source", "shuffle"):
        out = tmp_path / f"out-{order}"
        res = write_subset(m, out, transform=Pipeline.parse(["jpeg:90"]), skip_bad=True, order=order, seed=4)
        assert res.rows == 22 and "skipped 2 image(s)" in res.warnings[0] and "row 5" in res.warnings[0]
        man = pl.read_parquet(out / "manifest.parquet")
        t = pq.read_table(out / "data")
        assert man.height == t.num_rows == 22
        assert not ((man["source_shard"] == "data/s-0.parquet") & man["source_row"].is_in([3, 5])).any()
        # each output row is the transform of the source row the manifest names
        names = t.column("image_name").to_pylist()
        assert names == [n.replace(".png", ".jpg") for n in man["source_image_name"].to_list()]
        assert "could not be transformed" in (out / "README.md").read_text()


def test_subset_all_images_bad_is_an_empty_selection(tmp_path: Path) -> None:
    write_shard(tmp_path / "src" / "data" / "s-0.parquet", [{**r, "image_data": b"junk"} for r in rows(3)])
    m = load_manifest(str(tmp_path / "src"))
    with pytest.raises(EmptySelectionError):
        write_subset(m, tmp_path / "out", transform=Pipeline.parse(["png"]), skip_bad=True)


def test_subset_strip_only_keeps_pixels(tmp_path: Path) -> None:
    src = _dataset(tmp_path / "src", {0: jpeg_with_metadata(), 1: png_with_metadata()})
    res = write_subset(
        load_manifest(str(src)), tmp_path / "out", transform=Pipeline.parse([], strip_metadata=True)
    )
    t = pq.read_table(tmp_path / "out" / "data").to_pylist()
    source = pq.read_table(src / "data" / "s-0.parquet").to_pylist()
    jpg = opened(t[0]["image_data"])
    assert (t[0]["format"], jpg.format) == ("JPEG", "JPEG") and not jpg.getexif()
    assert t[0]["image_name"].endswith(".jpg")
    for out_row, src_row in zip(t[:12], source, strict=True):
        assert np.array_equal(
            np.asarray(opened(out_row["image_data"])), np.asarray(opened(src_row["image_data"]))
        )
    assert set(res.manifest.df["transform"]) == {"strip-metadata"}


# --- the CLI ------------------------------------------------------------------------------------------
def test_cli_bad_spec_exits_2(cfx: Any, tmp_path: Path) -> None:
    src = _dataset(tmp_path / "src")
    r = cfx("subset", str(src), "--out", str(tmp_path / "o"), "--transform", "jpeg:200")
    assert r.returncode == 2
    assert "Error: --transform 'jpeg:200': quality must be 1-100" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "o").exists()


def test_cli_bad_image_exit_3_names_the_row_and_skip_bad_counts(cfx: Any, tmp_path: Path) -> None:
    src = _dataset(tmp_path / "src", {4: b"\xff\xd8\xff\xe0 truncated jpeg"})
    r = cfx("subset", str(src), "--out", str(tmp_path / "o"), "--transform", "jpeg:90", "-w", "2")
    assert r.returncode == 3, r.stderr
    assert "Error: data/s-0.parquet row 4: cannot decode the image" in r.stderr and "--skip-bad" in r.stderr
    assert not (tmp_path / "o").exists()
    r = cfx(
        "subset", str(src), "--out", str(tmp_path / "o"), "--transform", "jpeg:90", "--skip-bad", "--json"
    )
    assert r.returncode == 0, r.stderr
    assert "skipped 1 image(s) that could not be transformed: data/s-0.parquet row 4" in r.stderr
    assert '"rows": 23' in r.out


def test_cli_grommelt_fix_loads_with_datasets(cfx: Any, cf_small: Path, tmp_path: Path) -> None:
    out = tmp_path / "fixed"
    r = cfx(
        "subset", str(cf_small), "--out", str(out), "--transform", "resize:max-side=64",
        "--transform", "jpeg:96", "--strip-metadata", "-w", "2",
        env={"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    import datasets

    ds = datasets.load_dataset(
        "parquet", data_dir=str(out / "data"), split="train", cache_dir=str(tmp_path / "hf-cache")
    )
    man = pl.read_parquet(out / "manifest.parquet")
    assert ds.num_rows == man.height == load_manifest(str(cf_small)).df.height
    assert list(ds.features) == SOURCE_SCHEMA.names
    for row in ds:
        image = opened(row["image_data"])
        assert image.format == row["format"] == "JPEG" and max(image.size) <= 64
        assert row["resolution"] == [image.width, image.height] and row["mode"] == image.mode
        assert image.quantization == opened(encode(image, "JPEG", quality=96)).quantization  # type: ignore[attr-defined]
    assert set(man["source_format"]) >= {"PNG", "JPEG"}  # both labels' formats went in, one came out
    assert set(man["transform"]) == {"resize:max-side=64 jpeg:96 strip-metadata"}


# --- the GenImage-style check: audit flags the format shortcut, jpeg:96 removes it -----------------
def _genimage_style(root: Path) -> Path:
    """Reals JPEG at quality 96 (as GenImage's ImageNet), fakes PNG; the same sizes and content on both sides,
    5 generators and 5 real sources so the joint canary has groups to fold by."""
    rng = np.random.default_rng(7)
    records = []
    for i in range(80):
        label = i % 2
        w, h = [(64, 64), (96, 64), (64, 80)][i % 3]
        base = rng.integers(0, 255, (h // 8, w // 8, 3), dtype=np.uint8)
        image = Image.fromarray(base).resize((w, h), Image.Resampling.BICUBIC)
        buf = io.BytesIO()
        image.save(buf, "PNG") if label else image.save(buf, "JPEG", quality=96)
        records.append(
            {
                **rows(1, label=label, start=i)[0],
                "image_name": f"{i:05d}.{'png' if label else 'jpg'}",
                "format": "PNG" if label else "JPEG",
                "resolution": f"[{w}, {h}]",
                "image_data": buf.getvalue(),
                "model_name": f"org/gen-{i % 5}" if label else "",
                "real_source": "" if label else f"source-{i % 5}",
            }
        )
    return write_shard(root / "data" / "HFCF_small_0.parquet", records).parents[1]


def _audit(source: Path) -> dict[str, float]:
    from cfx.audit import audit
    from cfx.inspect import inspect_manifest

    m = inspect_manifest(load_manifest(str(source)), workers=1, use_cache=False).manifest
    result = audit(m, joint=True)
    assert result.joint is not None and result.joint.auroc is not None
    return {f.feature: f.auroc for f in result.features} | {"joint": result.joint.auroc}


def test_genimage_style_set_format_and_quality_canaries_at_one_half_after_jpeg96(tmp_path: Path) -> None:
    source = _genimage_style(tmp_path / "genimage")
    before = _audit(source)
    out = tmp_path / "fixed"
    write_subset(load_manifest(str(source)), out, transform=Pipeline.parse(["jpeg:96"]))
    after = _audit(out)
    print(f"GenImage-style: before {before}\nafter {after}")  # the numbers, for the closing note
    assert before["format"] > 0.95 and before["jpeg_quality"] > 0.95
    assert abs(after["format"] - 0.5) <= 0.02 and abs(after["jpeg_quality"] - 0.5) <= 0.02
    assert after["joint"] < before["joint"]
