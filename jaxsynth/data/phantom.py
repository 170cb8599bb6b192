"""A procedural H&E histology phantom: SIMULATED tiles of "normal" and "tumour" tissue.

Why it exists: no labelled histology dataset ships inside an installable package, so the
built-in default source has to be generated. This one is honest about being simulated. It draws
the nuclear-atypia features that pathologists grade (paper 002: nuclei 1.5-2x enlarged,
pleomorphic, hyperchromatic, crowded, with a high nucleus-to-cytoplasm ratio) and colours them the
way a bright-field microscope sees stained tissue (Beer-Lambert absorption of haematoxylin and
eosin). It yields an exact nuclei mask for mask-guided synthesis, and a `difficulty` knob that
blends the two classes' distributions so that a small classifier on a rare split is clearly
imperfect while the same classifier on a large balanced split is nearly perfect (see
`DEFAULT_DIFFICULTY` and `data_prep/calibrate_phantom.py`).

Geometry. The field of view is FIXED: every tile shows the same physical area of tissue, whatever
`image_size` is, so a 32-px tile is the 64-px tile seen at half the resolution -- exactly what the
study split does when it resizes a real dataset to the working size. Sizes below are in tile
units (the tile is 1 x 1). A normal nucleus has radius ~0.04 (2.6 px at 64 px, 0.65 px at 16 px).
Tiles smaller than 64 px are rendered at a multiple of their size (at least 64 px) and
box-averaged down, so small tiles are anti-aliased rather than aliased; the mask is then the
majority vote of the sub-pixels.

Per-tile features. Each tile draws an atypia level `a_k` for four features k (nuclear size,
pleomorphism, hyperchromasia, crowding). Both classes share a low baseline `u_k` (0-0.5); a
tumour tile adds `(1 - difficulty) * m * w_k`, where `m` (the tile's grade, 0.4-1) is per tile and
`w_k` (0.75-1.25) per feature. So difficulty 0 separates the classes widely (with some overlap:
low-grade tumour tiles) and difficulty 1 makes the tumour distribution IDENTICAL to the normal one.
Nuisance variation shared by both classes -- stain intensity and hue, tissue composition (stroma
vs cellular), lymphocytes and fibroblasts, blur and noise -- is what makes the task need data.

What it does NOT model (see docs/phantom.md): real tissue architecture (glands, follicles,
vessels), mitoses, nucleoli, necrosis, fat, folds, scanner/JPEG artefacts, tissue-specific cell
types, 3-D section effects. It is a test bed for the training stack, not a substitute for data.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage, special

from jaxsynth.data.stain import PROTOCOL_A, StainProtocol, get_protocol, parse_phantom_id
from jaxsynth.data.types import Record

# Chosen by data_prep/calibrate_phantom.py (see docs/phantom.md for the measured table).
DEFAULT_DIFFICULTY = 0.5

MIN_SIZE, MAX_SIZE = 16, 256
_SUPERSAMPLE_TO = 64  # tiles smaller than this are rendered at >= 64 px and box-averaged down

# H&E stain vectors, gains and lamp: `jaxsynth.data.stain.PROTOCOL_A` (vectors between Ruifrok &
# Johnston's, whose eosin renders magenta, and the Macenko reference, whose eosin is dull red).

# Feature ranges: value at atypia 0 (typical normal) and at atypia 1 (typical high grade).
_NUC_RADIUS = 0.048  # tile units, normal nucleus radius at size scale 1
_SIZE_SCALE = (1.0, 1.75)  # multiplies the nucleus radius (diameter 1.5-2x => area 2.2-4x)
_SIZE_CV = (0.07, 0.30)  # per-nucleus spread of radius (pleomorphism)
_SHAPE_IRREG = (0.03, 0.17)  # amplitude of the radial harmonic perturbation (pleomorphism)
_ASPECT = (0.12, 0.65)  # max extra elongation of the ellipse (pleomorphism)
_HYPER = (1.0, 1.5)  # multiplies nuclear haematoxylin OD (hyperchromasia)
_CLUMP = (0.15, 0.55)  # chromatin clumping contrast
_DENSITY = (1.0, 1.5)  # multiplies the number of nuclei per area (crowding)
_DISORDER = (0.12, 0.42)  # jitter of nucleus positions as a fraction of spacing
_CYTO = (2.3, 1.35)  # cell radius / nucleus radius (falls => higher N:C ratio)
_SPACING = 0.195  # tile units between normal nuclei at density 1


@dataclasses.dataclass(frozen=True)
class TileFeatures:
    """The per-tile atypia levels (0 = typical normal, ~1 = high grade) a tile was drawn with."""

    size: float
    pleomorphism: float
    hyperchromasia: float
    crowding: float


def _lerp(pair: tuple[float, float], a: float | np.ndarray) -> float | np.ndarray:
    return pair[0] + (pair[1] - pair[0]) * a


def draw_features(rng: np.random.Generator, label: int, difficulty: float) -> TileFeatures:
    """Draw one tile's atypia levels; the tumour shift shrinks linearly to 0 as difficulty -> 1."""
    shared = rng.beta(2.0, 6.0)
    own = rng.beta(2.0, 6.0, size=4)
    base = 0.5 * shared + 0.5 * own  # both classes: mean 0.25, std ~0.1
    grade = rng.uniform(0.7, 1.0)  # per tumour tile
    weights = rng.uniform(0.75, 1.25, size=4)  # per feature: tumours differ in their mix
    shift = (1.0 - difficulty) * grade * weights if label == 1 else np.zeros(4)
    a = base + shift
    return TileFeatures(*(float(x) for x in a))


@functools.lru_cache(maxsize=64)
def _bspline_matrix(cells: int, res: int) -> np.ndarray:
    """(res, cells+3) cubic B-spline interpolation matrix, rows scaled to unit norm."""
    t = (np.arange(res) + 0.5) / res * cells
    j = np.floor(t).astype(int)
    f = t - j
    w = np.stack(
        [
            (1 - f) ** 3 / 6,
            (3 * f**3 - 6 * f**2 + 4) / 6,
            (-3 * f**3 + 3 * f**2 + 3 * f + 1) / 6,
            f**3 / 6,
        ],
        axis=1,
    )
    m = np.zeros((res, cells + 3))
    for k in range(4):
        m[np.arange(res), j + k] = w[:, k]
    # Divide each row by its weights' norm so every pixel of the 2-D field has unit variance.
    return (m / np.sqrt((w**2).sum(axis=1))[:, None]).astype(np.float32)


def _noise(rng: np.random.Generator, cells: int, res: int) -> np.ndarray:
    """Smooth unit-variance noise with `cells` features across the tile, sampled at `res` px.

    Defined in tile units, so the same seed gives the same field at any resolution.
    """
    grid = rng.standard_normal((cells + 3, cells + 3), dtype=np.float32)
    m = _bspline_matrix(cells, res)
    return m @ grid @ m.T


def _render_nuclei_bucketed(res: int, *arrays: np.ndarray, rim: float):
    """`_render_nuclei` on two size buckets, so small nuclei do not pay for the largest patch."""
    radius, aspect, amp = arrays[2], arrays[3], arrays[5]
    reach = radius * np.sqrt(aspect) * (1.0 + amp.sum(axis=1))
    small = reach <= np.median(reach) if len(reach) > 8 else np.ones(len(reach), bool)
    od_a, in_a = _render_nuclei(res, *(a[small] for a in arrays), rim=rim)
    if small.all():
        return od_a, in_a
    od_b, in_b = _render_nuclei(res, *(a[~small] for a in arrays), rim=rim)
    return np.maximum(od_a, od_b), np.maximum(in_a, in_b)


def _render_nuclei(
    res: int,
    cx: np.ndarray,
    cy: np.ndarray,
    radius: np.ndarray,
    aspect: np.ndarray,
    angle: np.ndarray,
    harm_amp: np.ndarray,
    harm_phase: np.ndarray,
    od: np.ndarray,
    rim: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Rasterise irregular elliptical nuclei at `res` px, vectorised over nuclei.

    Each nucleus is evaluated on a square patch around its centre (all patches at once, shape
    (K, P, P)); patches are merged into the tile with a scatter-max. Returns the nuclear
    haematoxylin OD (anti-aliased edges) and the exact mask (pixel centre inside the boundary).
    """
    if len(cx) == 0:
        return np.zeros((res, res), np.float32), np.zeros((res, res), np.float32)
    f32 = np.float32
    reach = radius * np.sqrt(aspect) * (1.0 + harm_amp.sum(axis=1))
    half = int(math.ceil(float(np.max(reach)) * res)) + 1
    offs = np.arange(-half, half + 1)
    ix0 = np.floor(cx * res).astype(int)
    iy0 = np.floor(cy * res).astype(int)
    ix = ix0[:, None] + offs[None, :]  # (K, P)
    iy = iy0[:, None] + offs[None, :]
    dx = ((ix + 0.5) / res - cx[:, None]).astype(f32)[:, None, :]  # (K, 1, P)
    dy = ((iy + 0.5) / res - cy[:, None]).astype(f32)[:, :, None]  # (K, P, 1)
    sq = np.sqrt(aspect)
    # Rotate into the ellipse frame and normalise by the semi-axes (r*sqrt(q), r/sqrt(q)).
    cu = (np.cos(angle) / (radius * sq)).astype(f32)[:, None, None]
    su = (np.sin(angle) / (radius * sq)).astype(f32)[:, None, None]
    cv = (np.cos(angle) * sq / radius).astype(f32)[:, None, None]
    sv = (np.sin(angle) * sq / radius).astype(f32)[:, None, None]
    un = dx * cu + dy * su
    vn = dy * cv - dx * sv
    rho = np.sqrt(un * un + vn * vn) + f32(1e-6)
    c1, s1 = un / rho, vn / rho
    # Boundary 1 + sum_k A_k cos(k*theta + phi_k), k = 2..5, via the angle-multiple recurrence.
    a_cos = (harm_amp * np.cos(harm_phase)).astype(f32)
    a_sin = (harm_amp * np.sin(harm_phase)).astype(f32)
    boundary = np.ones_like(rho)
    ck, sk = c1, s1
    for n in range(harm_amp.shape[1]):
        ck, sk = ck * c1 - sk * s1, sk * c1 + ck * s1  # cos/sin((n+2) theta)
        boundary += a_cos[:, n, None, None] * ck - a_sin[:, n, None, None] * sk
    r_px = (radius * res).astype(f32)[:, None, None]
    edge = np.clip((boundary - rho) * r_px + f32(0.5), 0.0, 1.0)  # ~1 px anti-aliased edge
    rel = np.minimum(rho / boundary, f32(1.0)) ** 6
    nuc_val = edge * (od.astype(f32)[:, None, None] * (f32(1.0) + f32(rim) * rel))
    in_val = (rho < boundary).astype(f32)  # pixel centre inside the boundary: the exact mask

    # Scatter-max into a canvas padded so that every patch index is valid, then crop.
    pad = half + max(
        0, -int(ix0.min()), -int(iy0.min()), int(ix0.max()) - res + 1, int(iy0.max()) - res + 1
    )
    width = res + 2 * pad
    flat = ((iy[:, :, None] + pad) * width + (ix[:, None, :] + pad)).ravel()
    canvas_od = np.zeros(width * width, f32)
    canvas_in = np.zeros(width * width, f32)
    np.maximum.at(canvas_od, flat, nuc_val.ravel())
    np.maximum.at(canvas_in, flat, in_val.ravel())
    crop = (slice(pad, pad + res), slice(pad, pad + res))
    return canvas_od.reshape(width, width)[crop], canvas_in.reshape(width, width)[crop]


@functools.lru_cache(maxsize=16)
def _pixel_grid(res: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = ((np.mgrid[0:res, 0:res] + 0.5) / res).astype(np.float32)
    return yy, xx


def _sample_field(field: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    res = field.shape[0]
    i = np.clip((y * res).astype(int), 0, res - 1)
    j = np.clip((x * res).astype(int), 0, res - 1)
    return field[i, j]


def _check_args(label: int, image_size: int, difficulty: float) -> None:
    if label not in (0, 1):
        raise ValueError(f"label must be 0 (normal) or 1 (tumour), got {label!r}")
    if not MIN_SIZE <= int(image_size) <= MAX_SIZE:
        raise ValueError(f"image_size must be in [{MIN_SIZE}, {MAX_SIZE}], got {image_size!r}")
    if not 0.0 <= float(difficulty) <= 1.0:
        raise ValueError(f"difficulty must be in [0, 1], got {difficulty!r}")


def render_tile(
    seed: int,
    label: int,
    image_size: int,
    difficulty: float = DEFAULT_DIFFICULTY,
    protocol: StainProtocol | None = None,
    fibres: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Render one SIMULATED H&E tile: (image uint8 (S, S, 3), nuclei mask uint8 (S, S)).

    Deterministic in its arguments. `label` 0 = normal, 1 = tumour. The geometry (nucleus
    positions and shapes, stroma) comes from random streams that do not depend on `image_size`,
    so the same seed at two sizes shows the same tissue; only pixel noise differs. `protocol`
    (default: `jaxsynth.data.stain.PROTOCOL_A`) sets only the optics, so the same seed under two
    protocols is the same tissue (identical mask) in two stainings.
    `fibres=False` renders the stroma as flat eosin without its collagen fibres (everything else
    identical): a tile "missing a tissue component", to test what a feature space can see.
    """
    protocol = PROTOCOL_A if protocol is None else protocol
    _check_args(label, image_size, difficulty)
    size = int(image_size)
    factor = max(1, math.ceil(_SUPERSAMPLE_TO / size))
    res = size * factor
    streams = np.random.SeedSequence([int(seed) & (2**63 - 1), int(label), 0x48E]).spawn(6)
    r_feat, r_layout, r_shape, r_field, r_stain, r_pix = (np.random.default_rng(s) for s in streams)

    feats = draw_features(r_feat, label, float(difficulty))
    a_size, a_pleo, a_hyp, a_crowd = (
        feats.size,
        feats.pleomorphism,
        feats.hyperchromasia,
        feats.crowding,
    )

    # --- tissue composition: cellular region vs stroma (shared distribution for both classes) ---
    region = _noise(r_field, 3, res) + 0.35 * _noise(r_field, 7, res)
    cellular_frac = r_layout.uniform(0.25, 0.95)
    thresh = 1.06 * special.ndtri(1.0 - cellular_frac)  # region ~ N(0, 1.06^2)
    cellular = np.clip((region - thresh) * 4.0 + 0.5, 0.0, 1.0)  # soft border

    # --- epithelial/parenchymal nuclei on a jittered, rotated grid ---
    density = _lerp(_DENSITY, a_crowd)
    spacing = _SPACING / math.sqrt(density)
    n_side = int(math.ceil(1.6 / spacing)) + 1
    g = (np.arange(n_side) - (n_side - 1) / 2) * spacing
    gx, gy = np.meshgrid(g, g)
    gx, gy = gx.ravel(), gy.ravel()
    if r_layout.random() < 0.5:  # alternate rows offset: a hexagonal-ish packing
        gx = gx + (np.round(gy / spacing) % 2) * spacing / 2
    theta = r_layout.uniform(0, np.pi)
    px = 0.5 + gx * np.cos(theta) - gy * np.sin(theta) + r_layout.uniform(-0.5, 0.5) * spacing
    py = 0.5 + gx * np.sin(theta) + gy * np.cos(theta) + r_layout.uniform(-0.5, 0.5) * spacing
    jitter = _lerp(_DISORDER, a_crowd) * spacing
    px = px + r_layout.uniform(-jitter, jitter, px.shape)
    py = py + r_layout.uniform(-jitter, jitter, py.shape)
    margin = 0.08
    keep = (px > -margin) & (px < 1 + margin) & (py > -margin) & (py < 1 + margin)
    px, py = px[keep], py[keep]
    keep = _sample_field(cellular, np.clip(px, 0, 1), np.clip(py, 0, 1)) > 0.5
    px, py = px[keep], py[keep]
    n_epi = len(px)

    size_scale = _lerp(_SIZE_SCALE, a_size)
    size_cv = _lerp(_SIZE_CV, a_pleo)
    radius = _NUC_RADIUS * size_scale * np.exp(r_shape.normal(0.0, size_cv, n_epi))
    radius = np.clip(radius, 0.4 * _NUC_RADIUS, 3.2 * _NUC_RADIUS)
    aspect = 1.0 + r_shape.uniform(0.0, 1.0, n_epi) * _lerp(_ASPECT, a_pleo)
    angle = r_shape.uniform(0, np.pi, n_epi)
    irreg = _lerp(_SHAPE_IRREG, a_pleo)
    harm_amp = r_shape.uniform(0.0, 1.0, (n_epi, 4)) * irreg / np.array([1.0, 1.4, 1.9, 2.5])
    harm_phase = r_shape.uniform(0, 2 * np.pi, (n_epi, 4))
    hyper = _lerp(_HYPER, a_hyp)
    od = 0.42 * hyper * np.exp(r_shape.normal(0.0, 0.08 + 0.12 * a_pleo, n_epi))
    cyto_width = (_lerp(_CYTO, a_crowd) - 1.0) * float(np.median(radius)) if n_epi else 0.0

    # --- shared nuisance cells: lymphocytes (small, round, dark) and stromal fibroblasts ---
    # Lymphocytic infiltrate: none to dense, clustered -- small dark nuclei that mimic crowding
    # and hyperchromasia in normal tissue (the classic confounder in lymph-node tiles).
    n_lym = r_layout.poisson(2.0 + 45.0 * r_layout.beta(0.6, 2.5))
    spread = r_layout.uniform(0.12, 0.5)
    lx = r_layout.uniform(0, 1) + r_layout.normal(0, spread, n_lym)
    ly = r_layout.uniform(0, 1) + r_layout.normal(0, spread, n_lym)
    n_fib = r_layout.poisson(5.0)
    fx, fy = r_layout.uniform(0, 1, n_fib), r_layout.uniform(0, 1, n_fib)
    fib_keep = _sample_field(cellular, fx, fy) < 0.5
    fx, fy = fx[fib_keep], fy[fib_keep]
    n_fib = len(fx)
    fibre_angle = r_field.uniform(0, np.pi)

    all_x = np.concatenate([px, lx, fx])
    all_y = np.concatenate([py, ly, fy])
    all_r = np.concatenate(
        [
            radius,
            _NUC_RADIUS * r_shape.uniform(0.62, 0.78, n_lym),
            _NUC_RADIUS * r_shape.uniform(0.75, 0.95, n_fib),
        ]
    )
    all_aspect = np.concatenate(
        [aspect, r_shape.uniform(1.0, 1.15, n_lym), r_shape.uniform(3.0, 5.0, n_fib)]
    )
    all_angle = np.concatenate(
        [angle, r_shape.uniform(0, np.pi, n_lym), fibre_angle + r_shape.normal(0, 0.2, n_fib)]
    )
    n_other = n_lym + n_fib
    all_amp = np.concatenate([harm_amp, np.full((n_other, 4), 0.01)])
    all_phase = np.concatenate([harm_phase, r_shape.uniform(0, 2 * np.pi, (n_other, 4))])
    all_od = np.concatenate(
        [od, r_shape.uniform(0.85, 1.0, n_lym), r_shape.uniform(0.6, 0.75, n_fib)]
    )

    nuc_od, inside = _render_nuclei_bucketed(
        res,
        all_x,
        all_y,
        all_r,
        all_aspect,
        all_angle,
        all_amp,
        all_phase,
        all_od,
        rim=0.25 + 0.35 * a_hyp,
    )

    # --- chromatin texture: fine granules, clumped in atypical nuclei ---
    clump = _lerp(_CLUMP, a_hyp)
    grain = _noise(r_field, 40, res)
    chromatin = 1.0 + clump * 0.5 * np.tanh(1.2 * grain) + 0.08 * _noise(r_field, 16, res)
    od_h_nuc = nuc_od * chromatin

    # --- stroma: wavy, oriented eosinophilic collagen fibres ---
    yy, xx = _pixel_grid(res)
    freq = r_field.uniform(11.0, 17.0)
    along = xx * np.cos(fibre_angle) + yy * np.sin(fibre_angle)
    warp = 2.2 * _noise(r_field, 3, res) + 0.7 * _noise(r_field, 10, res)
    fibres_1 = ((1.0 + np.cos(2 * np.pi * freq * along + warp)) / 2) ** 6
    fibres2 = ((1.0 + np.cos(2 * np.pi * 0.55 * freq * along + 1.7 * warp + 1.3)) / 2) ** 4
    breakup = np.clip(0.6 + 0.5 * _noise(r_field, 9, res), 0.0, 1.0)  # fibres fade in and out
    stroma = 1.0 - cellular
    if fibres:
        collagen = 0.20 + breakup * (0.30 * fibres_1 + 0.14 * fibres2)
    else:  # same mean optical density, no fibre texture
        collagen = 0.20 + np.mean(breakup * (0.30 * fibres_1 + 0.14 * fibres2))
    od_e_stroma = stroma * collagen * (1 + 0.12 * _noise(r_field, 6, res))

    # --- cytoplasm: a rim around the nuclei whose width sets the nucleus:cytoplasm ratio ---
    dist = ndimage.distance_transform_edt(inside < 0.5) / res  # tile units to nearest nucleus
    width = cyto_width * (1.0 + 0.3 * _noise(r_field, 8, res))
    cyto = np.clip((width - dist) * res * 0.7 + 0.5, 0.0, 1.0)
    cyto_tex = 1.0 + 0.18 * _noise(r_field, 20, res)
    cyto_e = r_stain.uniform(0.22, 0.32)
    od_e_cyto = cellular * (cyto * cyto_e * cyto_tex + (1 - cyto) * 0.07)
    od_h_cyto = cellular * cyto * 0.05

    nuc_cov = np.clip(nuc_od / np.maximum(all_od.max(initial=1e-6), 1e-6), 0, 1)
    od_h = od_h_nuc + od_h_cyto + 0.02 * stroma
    od_e = np.maximum(od_e_stroma + od_e_cyto, 0.0) * (1.0 - 0.6 * nuc_cov) + 0.08 * nuc_cov

    # --- staining/scanning variation shared by both classes ---
    h_gain = math.exp(r_stain.normal(0.0, 0.25)) * protocol.h_gain
    e_gain = math.exp(r_stain.normal(0.0, 0.25)) * protocol.e_gain
    h_vec = protocol.h_vec + r_stain.normal(0.0, 0.03, 3)
    e_vec = protocol.e_vec + r_stain.normal(0.0, 0.03, 3)
    h_vec, e_vec = np.abs(h_vec) / np.linalg.norm(h_vec), np.abs(e_vec) / np.linalg.norm(e_vec)
    blur = 0.45 * res / 64.0  # optical blur ~ fixed physical width
    od_h = ndimage.gaussian_filter(od_h * h_gain, blur, mode="nearest")
    od_e = ndimage.gaussian_filter(od_e * e_gain, blur, mode="nearest")
    od_rgb = od_h[..., None] * h_vec + od_e[..., None] * e_vec + 0.02
    background = protocol.background + r_stain.normal(0.0, 4.0, 3)
    img = background * np.power(10.0, -od_rgb)

    if factor > 1:  # box-average the supersampled tile (and majority-vote the mask)
        img = img.reshape(size, factor, size, factor, 3).mean(axis=(1, 3))
        inside = inside.reshape(size, factor, size, factor).mean(axis=(1, 3))
    img = img + r_pix.normal(0.0, 2.0, img.shape) + r_pix.normal(0.0, 1.0, (1, 1, 3))
    image = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    mask = (inside >= 0.5).astype(np.uint8)
    return image, mask


def tile_seed(seed: int, index: int) -> int:
    """A 63-bit tile seed from (source seed, index): any tile is reproducible on its own."""
    state = np.random.SeedSequence([int(seed) & (2**63 - 1), int(index)]).generate_state(2)
    return int((int(state[0]) << 31) ^ int(state[1])) & (2**63 - 1)


class PhantomSource:
    """The built-in SIMULATED H&E source (`source: phantom`): a procedural, offline dataset.

    Index i has label `i % 2` (0 = normal, 1 = tumour: interleaved, so any prefix is balanced);
    its id is `phantom/<seed>/<i>` and it is rendered from `tile_seed(seed, i)`, so every tile is
    reproducible on its own. Masks (exact nuclei masks) are always available. Nothing here is
    real patient data: see docs/phantom.md for what is and is not simulated.
    """

    name = "phantom"
    class_names = ("normal", "tumour")
    has_masks = True

    def __init__(
        self,
        num_per_class: int = 5000,
        image_size: int = 64,
        difficulty: float = DEFAULT_DIFFICULTY,
        seed: int = 0,
    ) -> None:
        if num_per_class < 1:
            raise ValueError(f"num_per_class must be >= 1, got {num_per_class!r}")
        _check_args(0, image_size, difficulty)
        self.num_per_class = int(num_per_class)
        self.image_size = int(image_size)
        self.difficulty = float(difficulty)
        self.seed = int(seed)

    def __len__(self) -> int:
        return 2 * self.num_per_class

    def _check(self, index: int) -> int:
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"phantom index {index} out of range [0, {len(self)})")
        return index

    def label_of(self, index: int) -> int:
        return self._check(index) % 2

    def id_of(self, index: int) -> str:
        return f"phantom/{self.seed}/{self._check(index)}"

    def load(self, index: int) -> Record:
        index = self._check(index)
        label = index % 2
        image, mask = render_tile(
            tile_seed(self.seed, index), label, self.image_size, self.difficulty
        )
        return Record(image=image, label=label, id=self.id_of(index), mask=mask)

    def render_batch(self, indices) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Render many tiles: (images uint8 (N,S,S,3), masks uint8 (N,S,S), labels int32 (N,))."""
        indices = [self._check(i) for i in indices]
        s = self.image_size
        images = np.empty((len(indices), s, s, 3), np.uint8)
        masks = np.empty((len(indices), s, s), np.uint8)
        labels = np.empty(len(indices), np.int32)
        for n, i in enumerate(indices):
            labels[n] = i % 2
            images[n], masks[n] = render_tile(tile_seed(self.seed, i), i % 2, s, self.difficulty)
        return images, masks, labels


# --- paired truth: the same tissue under two stain protocols (image-to-image models) ---


def render_ids(
    ids: Sequence[str],
    image_size: int,
    protocol: StainProtocol | str,
    difficulty: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Re-render phantom tiles (by their split ids) under `protocol`.

    Returns (images uint8 (N, S, S, 3), masks uint8 (N, S, S)). With protocol A and the source's
    size and difficulty this reproduces the split's own tiles; with B it gives their paired
    truth. Label = index % 2, as in `PhantomSource`.
    """
    proto = get_protocol(protocol) if isinstance(protocol, str) else protocol
    diff = DEFAULT_DIFFICULTY if difficulty is None else float(difficulty)
    s = int(image_size)
    images = np.empty((len(ids), s, s, 3), np.uint8)
    masks = np.empty((len(ids), s, s), np.uint8)
    for n, tid in enumerate(ids):
        seed, index = parse_phantom_id(tid)
        images[n], masks[n] = render_tile(tile_seed(seed, index), index % 2, s, diff, proto)
    return images, masks


def render_pairs(
    seed: int,
    indices: Sequence[int],
    image_size: int,
    difficulty: float | None = None,
    protocols: tuple[str, str] = ("A", "B"),
) -> dict[str, np.ndarray]:
    """Paired truth straight from a phantom seed: {"a", "b": uint8 (N,S,S,3), "mask": uint8
    (N,S,S), "label": int32 (N,)}; tile i of "a" and of "b" is the same tissue."""
    ids = [f"phantom/{int(seed)}/{int(i)}" for i in indices]
    a, mask = render_ids(ids, image_size, protocols[0], difficulty)
    b, mask_b = render_ids(ids, image_size, protocols[1], difficulty)
    if not np.array_equal(mask, mask_b):  # the masks never depend on the optics
        raise AssertionError("phantom masks differ between stain protocols")
    labels = np.asarray([int(i) % 2 for i in indices], np.int32)
    return {"a": a, "b": b, "mask": mask, "label": labels}
