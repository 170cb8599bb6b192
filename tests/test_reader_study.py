"""Reader study: blinded `create`, the web app's security rules, and `results` statistics.

The browser end-to-end test is in test_reader_study_e2e.py; the helpers here (folders, a live
server in a thread) are shared with it.
"""

from __future__ import annotations

import contextlib
import csv
import http.client
import io
import json
import re
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import stats as sps
from skimage.metrics import structural_similarity

from jaxsynth.cli import main
from jaxsynth.errors import UserError
from jaxsynth.reader_study import stats
from jaxsynth.reader_study.app import create_app
from jaxsynth.reader_study.create import create_study
from jaxsynth.reader_study.results import compute_results

SIZE = 32


def make_folders(root: Path, num_real: int = 3, num_synthetic: int = 3, seed: int = 0):
    """Real tiles: noisy PNGs carrying a text chunk; synthetic: smooth JPEGs carrying EXIF.

    Both carry metadata and differ in format and compressibility on purpose: the study must
    erase all of that. One corrupt file in each folder.
    """
    rng = np.random.default_rng(seed)
    real, synthetic = root / "real", root / "synthetic"
    (real / "sub").mkdir(parents=True)
    synthetic.mkdir()
    from PIL import PngImagePlugin

    for i in range(num_real):
        info = PngImagePlugin.PngInfo()
        info.add_text("origin", "real-scanner-XYZ")
        arr = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
        folder = real / "sub" if i % 2 else real
        Image.fromarray(arr).save(folder / f"real_{i}.png", pnginfo=info)
    for i in range(num_synthetic):
        yy, xx = np.mgrid[0:SIZE, 0:SIZE]
        arr = np.stack([(xx * 8 + i * 20) % 256, (yy * 8) % 256, np.full_like(xx, 128)], -1)
        exif = Image.Exif()
        exif[0x010E] = "synthetic by jaxsynth DCGAN"  # ImageDescription
        Image.fromarray(arr.astype(np.uint8)).save(
            synthetic / f"fake_{i}.jpg", quality=95, exif=exif
        )
    (real / "zz_truncated.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 10)
    (synthetic / "zz_empty.jpg").write_bytes(b"")
    return real, synthetic


def db_rows(study: Path, sql: str, params=()) -> list[sqlite3.Row]:
    conn = sqlite3.connect(study / "study.sqlite")
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def origin_of_item(study: Path, item_token: str) -> str:
    (row,) = db_rows(
        study,
        "SELECT im.origin FROM items i JOIN images im ON im.image_id = i.image_id "
        "WHERE i.item_token = ?",
        (item_token,),
    )
    return row["origin"]


@contextlib.contextmanager
def live_server(study: Path):
    """The real app under werkzeug's threaded server on a free loopback port, stopped after."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, create_app(study), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", server.server_port
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture
def study(tmp_path) -> Path:
    real, synthetic = make_folders(tmp_path)
    create_study(real, synthetic, tmp_path / "study", n=6, num_raters=2, seed=0)
    return tmp_path / "study"


def tokens(study: Path) -> list[str]:
    return [r["token"] for r in db_rows(study, "SELECT token FROM raters ORDER BY rater_id")]


def png_chunks(data: bytes) -> list[str]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    out, i = [], 8
    while i < len(data):
        length = int.from_bytes(data[i : i + 4], "big")
        out.append(data[i + 4 : i + 8].decode("ascii"))
        i += 12 + length
    return out


# ----------------------------------------------------------------------------- create


def test_create_blinds_every_file(study, tmp_path):
    images = db_rows(study, "SELECT * FROM images")
    assert sorted(r["origin"] for r in images) == ["real"] * 3 + ["synthetic"] * 3
    files = sorted((study / "images").iterdir())
    assert len(files) == 6
    sizes = set()
    for r in images:
        assert re.fullmatch(r"[0-9a-f]{32}\.png", r["file_name"])
        data = (study / "images" / r["file_name"]).read_bytes()
        sizes.add(len(data))
        assert png_chunks(data) == ["IHDR", "IDAT", "IEND"]  # no tEXt/eXIf/gAMA/pHYs/iCCP
        assert b"real-scanner" not in data and b"jaxsynth" not in data
        # the pixels are exactly the decoded source pixels (JPEG decoded once, then lossless)
        src_dir = tmp_path / ("real" if r["origin"] == "real" else "synthetic")
        expected = np.asarray(Image.open(src_dir / r["source_path"]).convert("RGB"))
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(data))), expected)
    assert len(sizes) == 1, "file sizes must not depend on the image content"
    # every rater sees the same 6 images, each in its own order, under fresh item tokens
    items = db_rows(study, "SELECT rater_id, position, image_id, item_token FROM items")
    by_rater = {}
    for it in items:
        by_rater.setdefault(it["rater_id"], []).append(it["image_id"])
    assert len(by_rater) == 2 and all(
        sorted(v) == sorted(r["image_id"] for r in images) for v in by_rater.values()
    )
    assert len({it["item_token"] for it in items}) == 12
    assert all(len(t) >= 43 for t in tokens(study))  # 32 random bytes, url-safe base64


def test_create_counts_corrupt_inputs_and_reports_shortage(tmp_path):
    real, synthetic = make_folders(tmp_path, num_real=2, num_synthetic=3)
    with pytest.raises(UserError, match=r"--real .*only 2 decodable images \(3 files, 1 corrupt\)"):
        create_study(real, synthetic, tmp_path / "s", n=6, num_raters=1)
    for seed in range(4):  # counted whatever the order, not only when met before the sample fills
        res = create_study(real, synthetic, tmp_path / f"s{seed}", n=2, num_raters=1, seed=seed)
        items = sorted((i["item"], i["reason"]) for i in res.skipped["skipped_items"])
        assert items == [
            ("real:zz_truncated.png", "truncated or corrupt PNG data"),
            ("synthetic:zz_empty.jpg", "zero-byte file"),
        ]


def test_create_cli_prints_links_and_skips(tmp_path, capsys):
    real, synthetic = make_folders(tmp_path, num_real=3, num_synthetic=3)
    code = main(
        [
            "reader-study",
            "create",
            "--real",
            str(real),
            "--synthetic",
            str(synthetic),
            "--n",
            "6",
            "--raters",
            "3",
            "--out",
            str(tmp_path / "st"),
            "--seed",
            "1",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    links = re.findall(r"rater-\d: (http://127\.0\.0\.1:8000/r/([A-Za-z0-9_-]+))", out)
    assert [t for _, t in links] == tokens(tmp_path / "st")
    assert "skipped 2 corrupt input files" in out
    assert "zz_truncated.png" in err and "zz_empty.jpg" in err
    # an existing study is never overwritten: one-line error, exit 2
    code = main(
        [
            "reader-study",
            "create",
            "--real",
            str(real),
            "--synthetic",
            str(synthetic),
            "--n",
            "6",
            "--out",
            str(tmp_path / "st"),
        ]
    )
    assert code == 2 and "not an empty folder" in capsys.readouterr().err


def test_create_same_seed_same_orders(tmp_path):
    real, synthetic = make_folders(tmp_path)
    orders = []
    for name in ("a", "b", "c"):
        seed = 7 if name != "c" else 8
        create_study(real, synthetic, tmp_path / name, n=6, num_raters=2, seed=seed)
        orders.append(
            [
                r["source_path"]
                for r in db_rows(
                    tmp_path / name,
                    "SELECT im.source_path FROM items i JOIN images im ON im.image_id = i.image_id "
                    "ORDER BY i.rater_id, i.position",
                )
            ]
        )
    assert orders[0] == orders[1]
    assert orders[0] != orders[2]
    assert tokens(tmp_path / "a") != tokens(tmp_path / "b")  # secrets are never seeded


def test_create_refuses_mixed_sizes_unless_resized(tmp_path):
    real, synthetic = make_folders(tmp_path)
    big = np.zeros((48, 48, 3), np.uint8)
    for p in synthetic.glob("fake_*.jpg"):
        Image.fromarray(big).save(p)
    with pytest.raises(UserError, match="differ in size.*--resize"):
        create_study(real, synthetic, tmp_path / "s", n=6, num_raters=1)
    create_study(real, synthetic, tmp_path / "s2", n=6, num_raters=1, resize=SIZE)
    assert {
        (r["width"], r["height"]) for r in db_rows(tmp_path / "s2", "SELECT * FROM images")
    } == {(SIZE, SIZE)}


# ----------------------------------------------------------------------------- web app


def _current(client, token):
    page = client.get(f"/r/{token}/rate").get_data(as_text=True)
    item = re.search(r'name="item" value="([^"]+)"', page)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page)
    return page, (item.group(1) if item else None), (csrf.group(1) if csrf else None)


def _answers(study):
    return [
        tuple(r)
        for r in db_rows(
            study, "SELECT rater_id, position, call, score FROM answers ORDER BY rater_id, position"
        )
    ]


def test_pages_and_images_carry_no_ground_truth(study):
    app = create_app(study)
    client = app.test_client()
    token = tokens(study)[0]
    secrets_in_db = [r["file_name"] for r in db_rows(study, "SELECT file_name FROM images")]
    secrets_in_db += [r["source_path"] for r in db_rows(study, "SELECT source_path FROM images")]
    # Swapping every image's ground truth changes no byte that is served.
    page, item, _ = _current(client, token)
    before = (page, client.get(f"/r/{token}").data, client.get(f"/r/{token}/img/{item}").data)
    conn = sqlite3.connect(study / "study.sqlite")
    conn.execute(
        "UPDATE images SET origin = CASE origin WHEN 'real' THEN 'synthetic' ELSE 'real' END"
    )
    conn.commit()
    after = (
        _current(client, token)[0],
        client.get(f"/r/{token}").data,
        client.get(f"/r/{token}/img/{item}").data,
    )
    conn.execute(
        "UPDATE images SET origin = CASE origin WHEN 'real' THEN 'synthetic' ELSE 'real' END"
    )
    conn.commit()
    conn.close()
    assert before == after
    normalized_pages, image_headers, origins = set(), [], []
    for k in range(6):
        page, item, csrf = _current(client, token)
        origins.append(origin_of_item(study, item))
        assert all(s not in page for s in secrets_in_db)
        img = client.get(f"/r/{token}/img/{item}")
        assert img.status_code == 200 and img.data[:8] == b"\x89PNG\r\n\x1a\n"
        image_headers.append(sorted((k_, v) for k_, v in img.headers.items() if k_ != "Date"))
        page = page.replace(item, "ITEM").replace(csrf, "CSRF")
        # the progress counters are the only other things allowed to change
        page = re.sub(r"([Ii]mage) \d+ of 6", r"\1 N of 6", page)
        page = re.sub(r'(<progress[^>]*value=)"\d+"([^>]*>)\d+ of 6', r'\1"N"\2N of 6', page)
        normalized_pages.add(page)
        call = "real" if k % 2 else "synthetic"
        r = client.post(f"/r/{token}/answer", data={"item": item, "csrf": csrf, "call": call})
        assert r.status_code == 303
    assert sorted(origins) == ["real"] * 3 + ["synthetic"] * 3
    assert len(normalized_pages) == 1, "a rating page differs by more than its tokens/counters"
    assert all(h == image_headers[0] for h in image_headers), "image headers depend on the image"
    assert "Content-Disposition" not in dict(image_headers[0])
    headers = client.get(f"/r/{token}").headers
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert headers["Cache-Control"] == "no-store" and headers["Referrer-Policy"] == "no-referrer"
    assert "Thank you" in client.get(f"/r/{token}/rate").get_data(as_text=True)


def test_tampering_is_rejected(study):
    app = create_app(study)
    t1, t2 = tokens(study)
    c1, c2 = app.test_client(), app.test_client()
    _, item1, csrf1 = _current(c1, t1)
    _, item2, csrf2 = _current(c2, t2)
    ok = {"item": item1, "csrf": csrf1, "call": "real"}
    # rater 2 can neither see nor answer rater 1's item, even with a valid session of their own
    assert c2.get(f"/r/{t2}/img/{item1}").status_code == 404
    assert c2.post(f"/r/{t2}/answer", data={**ok, "csrf": csrf2}).status_code == 404
    # a forged item id, an unknown or malformed rater token
    assert c1.post(f"/r/{t1}/answer", data={**ok, "item": "A" * 22}).status_code == 404
    assert c1.get(f"/r/{'x' * 43}").status_code == 404
    assert c1.get(f"/r/{t1[:-1]}").status_code == 404
    assert c1.get(f"/r/{t1}'%20OR%201=1--").status_code == 404
    # CSRF: missing, wrong, or another browser session's token
    assert c1.post(f"/r/{t1}/answer", data={**ok, "csrf": ""}).status_code == 403
    assert c1.post(f"/r/{t1}/answer", data={**ok, "csrf": "x" * 43}).status_code == 403
    assert c1.post(f"/r/{t1}/answer", data={**ok, "csrf": csrf2}).status_code == 403
    assert app.test_client().post(f"/r/{t1}/answer", data=ok).status_code == 403  # no session
    # out-of-range or malformed answers
    for score in ("0", "6", "-1", "3.5", "abc", "1 "):
        assert c1.post(f"/r/{t1}/answer", data={**ok, "score": score}).status_code == 400
    assert c1.post(f"/r/{t1}/answer", data={**ok, "call": "maybe"}).status_code == 400
    assert c1.post(f"/r/{t1}/answer", data={**ok, "call": ""}).status_code == 400
    assert c1.get(f"/r/{t1}/answer").status_code == 405
    assert _answers(study) == []
    # a good answer is stored; replaying it (or answering a later item out of order) is 409
    assert c1.post(f"/r/{t1}/answer", data={**ok, "score": "4"}).status_code == 303
    assert c1.post(f"/r/{t1}/answer", data={**ok, "call": "synthetic"}).status_code == 409
    later = db_rows(study, "SELECT item_token FROM items WHERE rater_id = 1 AND position = 5")
    assert c1.post(f"/r/{t1}/answer", data={**ok, "item": later[0][0]}).status_code == 409
    assert _answers(study) == [(1, 0, "real", 4)]


def test_path_traversal_is_rejected_over_raw_http(study):
    """Raw requests (no client-side normalisation) for the database and image files by path."""
    token = tokens(study)[0]
    file_name = db_rows(study, "SELECT file_name FROM images LIMIT 1")[0][0]
    paths = [
        "/study.sqlite",
        f"/images/{file_name}",
        f"/r/{token}/img/{file_name}",
        f"/r/{token}/img/../../study.sqlite",
        f"/r/{token}/img/..%2F..%2Fstudy.sqlite",
        f"/r/{token}/img/%2e%2e%2f%2e%2e%2fstudy.sqlite",
        f"/r/{token}/img/..%252F..%252Fstudy.sqlite",
        f"/r/{token}/img/..\\..\\study.sqlite",
        "/r/..%2F..%2Fstudy.sqlite",
        "/static/../study.sqlite",
        "/static/..%2F..%2F..%2Fstudy.sqlite",
        "/static/%2e%2e/%2e%2e/%2e%2e/%2e%2e/reader_study/store.py",
        "/static/../app.py",
        f"/r/{token}/img/{file_name[:-4]}",
        "/",
    ]
    with live_server(study) as (_, port):
        for path in paths:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", path)
            resp = conn.getresponse()
            body = resp.read()
            conn.close()
            assert 400 <= resp.status < 500, (path, resp.status)
            assert not body.startswith(b"SQLite format") and b"\x89PNG" not in body[:8], path
            assert b"import" not in body, path


def test_serve_cli_runs_the_app(study):
    """`jaxsynth reader-study serve` as a process: prints links, serves them, exits on SIGINT —
    even when started with SIGINT ignored (as under nohup or a pytest-xdist worker, whose
    ignore a child inherits; Python then never raises KeyboardInterrupt on its own)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "jaxsynth.cli", "reader-study", "serve", str(study), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    try:
        first = proc.stdout.readline()
        match = re.search(r"on http://127\.0\.0\.1:(\d+)/", first)
        assert match, (first, proc.stderr.read() if proc.poll() is not None else "")
        port = int(match.group(1))
        links = [proc.stdout.readline() for _ in range(2)]
        assert [re.search(r"/r/([A-Za-z0-9_-]+)", line).group(1) for line in links] == tokens(study)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", f"/r/{tokens(study)[1]}")
        resp = conn.getresponse()
        assert resp.status == 200 and b"0 of 6 answered" in resp.read()
        conn.close()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    assert proc.returncode == 0


def test_serve_binds_loopback_by_default():
    from jaxsynth.cli import build_parser

    args = build_parser().parse_args(["reader-study", "serve", "somewhere"])
    assert (args.host, args.port) == ("127.0.0.1", 8000)


# ----------------------------------------------------------------------------- statistics


def test_fleiss_kappa_textbook_example():
    # Fleiss (1971) as worked on Wikipedia's "Fleiss' kappa" page: 10 subjects, 14 raters,
    # 5 categories; P-bar = 0.378, P-bar-e = 0.213, kappa = 0.210.
    counts = np.array(
        [
            [0, 0, 0, 0, 14],
            [0, 2, 6, 4, 2],
            [0, 0, 3, 5, 6],
            [0, 3, 9, 2, 0],
            [2, 2, 8, 1, 1],
            [7, 7, 0, 0, 0],
            [3, 2, 6, 3, 0],
            [2, 5, 3, 2, 2],
            [6, 5, 2, 1, 0],
            [0, 2, 2, 3, 7],
        ]
    )
    assert round(stats.fleiss_kappa(counts), 3) == 0.210
    assert stats.fleiss_kappa([[3, 0], [0, 3], [3, 0]]) == pytest.approx(1.0)
    assert np.isnan(stats.fleiss_kappa([[2, 0], [2, 0]]))
    with pytest.raises(ValueError):
        stats.fleiss_kappa([[2, 0], [1, 0]])


def test_accuracy_summary_exact_binomial():
    s = stats.accuracy_summary(3, 3, 3, 3)
    assert s["accuracy"]["pct"] == 100.0
    assert s["accuracy"]["p_value"] == pytest.approx(2 * 0.5**6)  # two-sided, all 6 correct
    # Clopper-Pearson for 6/6: lower bound (alpha/2)^(1/n), upper 1
    assert s["accuracy"]["ci95_pct"][0] == pytest.approx(100 * 0.025 ** (1 / 6))
    s = stats.accuracy_summary(11, 20, 6, 18)  # paper 003's 55 % and 33 %
    assert s["real"]["pct_called_real"] == 55.0
    assert s["synthetic"]["pct_called_synthetic"] == pytest.approx(100 / 3)
    k, n = 17, 38
    p_ref = sum(
        sps.binom.pmf(i, n, 0.5)
        for i in range(n + 1)
        if sps.binom.pmf(i, n, 0.5) <= sps.binom.pmf(k, n, 0.5) * (1 + 1e-7)
    )
    assert s["accuracy"]["p_value"] == pytest.approx(p_ref)
    lo, hi = s["accuracy"]["ci95_pct"]
    assert lo == pytest.approx(100 * sps.beta.ppf(0.025, k, n - k + 1))
    assert hi == pytest.approx(100 * sps.beta.ppf(0.975, k + 1, n - k))


def _answer_all(study, rule):
    """Answer every item of every rater through the app; rule(rater_index, origin, k) -> form."""
    app = create_app(study)
    for ri, token in enumerate(tokens(study)):
        client = app.test_client()
        for k in range(6):
            _, item, csrf = _current(client, token)
            form = rule(ri, origin_of_item(study, item), k)
            r = client.post(f"/r/{token}/answer", data={"item": item, "csrf": csrf, **form})
            assert r.status_code == 303


def test_results_statistics_against_hand_counts(study, tmp_path, capsys):
    # rater 1 is always right and scores real 5, synthetic 1..3; rater 2 calls everything real.
    synth_paths = sorted(
        r["source_path"]
        for r in db_rows(study, "SELECT source_path FROM images WHERE origin = 'synthetic'")
    )

    def rule(ri, origin, k):
        if ri == 0:
            return {"call": origin, "score": "5" if origin == "real" else str(1 + k % 3)}
        return {"call": "real", "score": "4" if origin == "real" else "2"}

    _answer_all(study, rule)
    ssim_file = tmp_path / "ssim.json"
    ssim_by_path = {p: 0.1 * (i + 1) for i, p in enumerate(synth_paths)}
    ssim_file.write_text(json.dumps(ssim_by_path))
    res = compute_results(study, ssim_json=ssim_file)
    r1, r2 = res["per_rater"]
    assert (r1["real"]["pct_called_real"], r1["synthetic"]["pct_called_synthetic"]) == (100, 100)
    assert (r2["real"]["pct_called_real"], r2["synthetic"]["pct_called_synthetic"]) == (100, 0)
    assert r1["accuracy"]["p_value"] == pytest.approx(2 * 0.5**6)
    assert r2["accuracy"]["p_value"] == pytest.approx(sps.binomtest(3, 6).pvalue)
    pooled = res["pooled"]
    assert pooled["accuracy"]["correct"] == 9 and pooled["accuracy"]["n"] == 12
    assert pooled["real"]["pct_called_real"] == 100.0
    assert pooled["synthetic"]["pct_called_synthetic"] == 50.0
    # real images: [2 real, 0 synthetic]; synthetic: [1, 1] -> P-bar 0.5, Pe 0.625, kappa -1/3
    assert res["fleiss_kappa"]["kappa"] == pytest.approx(-1 / 3)
    assert res["fleiss_kappa"]["n_images"] == 6
    assert r1["likert"]["real_mean"] == 5.0 and r2["likert"]["synthetic_mean"] == 2.0
    # Pearson r of per-image mean Likert vs the given SSIM, against numpy
    per_image = {p["source_path"]: p for p in res["per_image"] if p["origin"] == "synthetic"}
    x = [per_image[p]["mean_score"] for p in synth_paths]
    y = [ssim_by_path[p] for p in synth_paths]
    assert res["likert_vs_ssim"]["r"] == pytest.approx(np.corrcoef(x, y)[0, 1])
    assert res["likert_vs_ssim"]["n"] == 3
    # the CLI writes JSON + markdown + figure
    code = main(["reader-study", "results", str(study), "--ssim-json", str(ssim_file)])
    out, err = capsys.readouterr()
    assert code == 0, err
    saved = json.loads((study / "results" / "results.json").read_text())
    assert saved["fleiss_kappa"]["kappa"] == pytest.approx(-1 / 3)
    assert "| rater-2 | 6/6 | 100.0 % (3/3) | 0.0 % (0/3) | 50.0 %" in out
    assert (study / "results" / "results.md").read_text() in out
    with open(study / "results" / "answers.csv") as f:
        answers_csv = list(csv.DictReader(f))
    assert len(answers_csv) == 12
    assert {(a["rater"], a["call"]) for a in answers_csv if a["origin"] == "synthetic"} == {
        ("rater-1", "synthetic"),
        ("rater-2", "real"),
    }
    png = Image.open(study / "results" / "results.png")
    assert png.format == "PNG" and png.size[0] > 400


def test_results_ssim_computed_matches_skimage(study):
    _answer_all(study, lambda ri, origin, k: {"call": "synthetic", "score": str(1 + (k + ri) % 5)})
    res = compute_results(study)
    rows = db_rows(study, "SELECT file_name, origin FROM images")
    load = lambda r: np.asarray(Image.open(study / "images" / r["file_name"]))  # noqa: E731
    real = [load(r) for r in rows if r["origin"] == "real"]
    for r in rows:
        if r["origin"] != "synthetic":
            continue
        want = np.mean(
            [
                structural_similarity(
                    load(r),
                    q,
                    gaussian_weights=True,
                    sigma=1.5,
                    use_sample_covariance=False,
                    data_range=255,
                    channel_axis=-1,
                )
                for q in real
            ]
        )
        got = next(p["ssim"] for p in res["per_image"] if p["file_name"] == r["file_name"])
        assert got == pytest.approx(want, abs=1e-5)
    assert res["likert_vs_ssim"]["ssim_source"].startswith("computed")
    assert res["pooled"]["synthetic"]["pct_called_synthetic"] == 100.0
    assert res["pooled"]["real"]["pct_called_real"] == 0.0
    # everyone answered "synthetic": chance agreement is 1 and kappa is undefined, not a number
    assert res["fleiss_kappa"]["kappa"] is None and "undefined" in res["fleiss_kappa"]["note"]
