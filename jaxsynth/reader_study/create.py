"""`reader-study create`: sample real and synthetic images into a blinded study folder.

Blinding is the point, so every copied image is decoded and re-encoded the same way: RGB, PNG,
no ancillary chunks (no EXIF, text, gamma, DPI or ICC data), and *stored* (zlib level 0), which
makes the file size a function of the width and height only — a compressed PNG would be smaller
for smoother (often synthetic) tiles and leak the answer through `Content-Length`. Files get
random names and are written in shuffled order (even their mtimes say nothing). All sampled images
must share one size (or `resize` them all), since a rater would otherwise tell the sets apart by
size.

Every rater rates the same sampled images (needed for Fleiss' kappa), each in their own seeded
order, behind a fresh random item token per (rater, image).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import secrets
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from jaxsynth.data.imageio import decode_image
from jaxsynth.data.types import CorruptImage, SkipReport
from jaxsynth.errors import UserError
from jaxsynth.reader_study import store


@dataclasses.dataclass(frozen=True)
class CreatedStudy:
    study_dir: Path
    rater_tokens: list[tuple[str, str]]  # (name, token)
    num_real: int
    num_synthetic: int
    image_size: tuple[int, int]  # (height, width)
    skipped: dict  # SkipReport.summary() over both folders

    def links(self, base_url: str) -> list[tuple[str, str]]:
        base = base_url.rstrip("/")
        return [(name, f"{base}/r/{token}") for name, token in self.rater_tokens]


def list_image_files(folder: Path) -> list[Path]:
    """Every non-hidden file under `folder` (recursively), sorted, so a seed fixes the sample."""
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def _sample_decoded(
    folder: Path,
    flag: str,
    count: int,
    rng: np.random.Generator,
    skips: SkipReport,
    hashes: dict[str, str] | None = None,
) -> list[tuple[str, np.ndarray]]:
    """The first `count` decodable files of a seeded random order; every corrupt file is counted.

    All files are decoded once (only the picked ones are kept), so the skip count covers the
    whole folder, not just the files that happened to be visited before the sample was full.
    """
    if not folder.is_dir():
        raise UserError(f"--{flag} {folder}: not a folder")
    files = list_image_files(folder)
    picked: list[tuple[str, np.ndarray]] = []
    num_corrupt = 0
    for done, index in enumerate(rng.permutation(len(files)), start=1):
        path = files[int(index)]
        rel = path.relative_to(folder).as_posix()
        try:
            image, _ = decode_image(path, name=str(path))
        except CorruptImage as e:
            skips.skip(f"{flag}:{rel}", str(e))
            num_corrupt += 1
            continue
        if hashes is not None:  # content hash of every decodable image (overlap check)
            digest = hashlib.sha256(str(image.shape).encode() + image.tobytes()).hexdigest()
            hashes.setdefault(digest, rel)
        if len(picked) < count:
            picked.append((rel, image))
        if done % 5000 == 0:
            print(f"--{flag}: checked {done}/{len(files)} files", file=sys.stderr, flush=True)
    if len(picked) < count:
        raise UserError(
            f"--{flag} {folder}: only {len(picked)} decodable images "
            f"({len(files)} files, {num_corrupt} corrupt), the study needs {count}"
        )
    return picked


def _resize(image: np.ndarray, size: int | None) -> np.ndarray:
    if size is None or image.shape[:2] == (size, size):
        return image
    return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.LANCZOS))


def encode_blinded_png(image: np.ndarray) -> bytes:
    """RGB PNG with only IHDR/IDAT/IEND and stored (uncompressed) data: size depends on WxH only."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image, np.uint8), "RGB").save(
        buf, format="PNG", compress_level=0
    )
    return buf.getvalue()


def create_study(
    real_dir: str | os.PathLike,
    synthetic_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    n: int,
    num_raters: int,
    seed: int = 0,
    resize: int | None = None,
) -> CreatedStudy:
    """Build a study of `n` images per rater: n // 2 real and n - n // 2 synthetic."""
    if n < 2:
        raise UserError(f"--n {n}: a study needs at least 2 images (1 real, 1 synthetic)")
    if num_raters < 1:
        raise UserError(f"--raters {num_raters}: need at least 1 rater")
    if resize is not None and resize < 8:
        raise UserError(f"--resize {resize}: too small (at least 8 px)")
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--out {out}: exists and is not an empty folder (a study is never reused)")

    rng = np.random.default_rng(seed)
    skips = SkipReport()
    num_real = n // 2
    num_synthetic = n - num_real
    real_hashes: dict[str, str] = {}
    syn_hashes: dict[str, str] = {}
    real = _sample_decoded(Path(real_dir), "real", num_real, rng, skips, real_hashes)
    synthetic = _sample_decoded(
        Path(synthetic_dir), "synthetic", num_synthetic, rng, skips, syn_hashes
    )
    shared = sorted(set(real_hashes) & set(syn_hashes), key=lambda h: real_hashes[h])
    if shared:  # an image that is both "real" and "synthetic" makes every answer about it wrong
        h = shared[0]
        raise UserError(
            f"--real {real_dir} and --synthetic {synthetic_dir} share {len(shared)} identical "
            f"image(s) (e.g. real {real_hashes[h]} = synthetic {syn_hashes[h]}); "
            f"the two sets must be disjoint"
        )
    images = [("real", rel, _resize(im, resize)) for rel, im in real]
    images += [("synthetic", rel, _resize(im, resize)) for rel, im in synthetic]

    sizes = {(origin, im.shape[1], im.shape[0]) for origin, _, im in images}
    if len({(w, h) for _, w, h in sizes}) > 1:
        found = ", ".join(sorted(f"{o} {w}x{h}" for o, w, h in sizes))
        raise UserError(
            f"images differ in size ({found}); a rater could tell real from synthetic by size: "
            "pass --resize N to bring every image to N x N"
        )
    height, width = images[0][2].shape[:2]

    out.mkdir(parents=True, exist_ok=True)
    (out / store.IMAGES_DIR).mkdir()
    conn = store.connect(out, create=True)
    try:
        with store.transaction(conn):
            meta = {
                "format": "jaxsynth-reader-study/1",
                "created_at": store.now_utc(),
                "seed": str(seed),
                "n": str(n),
                "num_raters": str(num_raters),
                "real_dir": str(Path(real_dir).resolve()),
                "synthetic_dir": str(Path(synthetic_dir).resolve()),
                "image_size": f"{width}x{height}",
                "resize": "" if resize is None else str(resize),
                "skipped": json.dumps(skips.summary()),
                "session_secret": secrets.token_hex(32),
            }
            conn.executemany("INSERT INTO meta VALUES (?, ?)", list(meta.items()))
            # Write files and rows in a random order: nothing on disk follows real-then-synthetic.
            image_ids = []
            for index in rng.permutation(len(images)):
                origin, rel, image = images[int(index)]
                data = encode_blinded_png(image)
                file_name = secrets.token_hex(16) + ".png"
                (out / store.IMAGES_DIR / file_name).write_bytes(data)
                cur = conn.execute(
                    "INSERT INTO images (file_name, origin, source_path, width, height, sha256) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (file_name, origin, rel, width, height, hashlib.sha256(data).hexdigest()),
                )
                image_ids.append(cur.lastrowid)
            tokens = []
            for r in range(num_raters):
                name, token = f"rater-{r + 1}", secrets.token_urlsafe(32)
                cur = conn.execute("INSERT INTO raters (name, token) VALUES (?, ?)", (name, token))
                rater_id = cur.lastrowid
                order = rng.permutation(len(image_ids))
                conn.executemany(
                    "INSERT INTO items (rater_id, position, item_token, image_id) "
                    "VALUES (?, ?, ?, ?)",
                    [
                        (rater_id, pos, secrets.token_urlsafe(16), image_ids[int(k)])
                        for pos, k in enumerate(order)
                    ],
                )
                tokens.append((name, token))
    finally:
        conn.close()
    return CreatedStudy(out, tokens, num_real, num_synthetic, (height, width), skips.summary())
