"""The run, stage by stage: plan -> fit the pair once -> process tiles -> publish layers.

`process_tile` is the one pure per-tile function; the CLI, the Prefect flow, notebooks and
benchmarks all reach the pixels through it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from affine import Affine
from odc.geo.geobox import GeoBox
from pydantic import BaseModel
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from imagery import change, coregister, normalize
from imagery.aoi import AOI, from_geometry
from imagery.components import strip_bounds
from imagery.composite import median_composite
from imagery.config import MaskParams, Settings
from imagery.errors import InputError
from imagery.fit_sample import any_valid, sample_pixels
from imagery.grid import Tile, clip_geobox, run_geobox, tile_anchor, tiles
from imagery.heap import keep_freed_arrays, long_lived_frozen, release_free_memory
from imagery.look_store import KEPT_BAND, KeptLooks, LookStore, record_bytes
from imagery.masking import clear_of_flags
from imagery.sentinel2 import CHANGE_BANDS
from imagery.shift_field import ShiftField, TilePoints, concat_tie_points, fit_shift_field
from imagery.sources.base import DigitalNumberSource, Scene, SceneSource
from imagery.sources.local import require_bands
from imagery.sources.raster import UnfitValues, block_grid, drop_read_caches
from imagery.stageclock import CHANGE, COREG, READ, StageClock

#: Band the co-registration matches on: NIR is stable across dates and sharp on built structure.
COREG_BAND = CHANGE_BANDS.index("B08")
#: Largest window the pair fit reads at full resolution (pixels per side).
FIT_WINDOW_PX = 2048
#: Pixels handed to the radiometric and change-model fits (a random subsample beyond this): both
#: fit a few dozen global numbers, which a million pixels pin down (docs/performance.md).
FIT_MAX_PIXELS = 1_000_000
#: Pixels a read takes beyond a window's edge: bilinear upsampling of a 20 m band reads one file
#: pixel past the last centre (windows meant to end on a block edge end this much before it).
READ_REACH_PX = 1
#: Rows of the fit window read and composited at a time (see `read_composite_by_strips`): one block
#: row of the inputs (512 px blocks), so each block is decoded once whatever the block store keeps
#: (the two periods, read at once, decode ~90 MB of blocks per block row: more than it keeps whole).
FIT_STRIP_ROWS = 512


class GridSpec(BaseModel):
    """A serialisable GeoBox: CRS, affine transform and shape."""

    crs: str
    affine: tuple[float, float, float, float, float, float]
    width: int
    height: int

    @classmethod
    def from_geobox(cls, gbox: GeoBox) -> GridSpec:
        """Describe a GeoBox."""
        a = gbox.affine
        return cls(
            crs=str(gbox.crs), affine=(a.a, a.b, a.c, a.d, a.e, a.f),
            width=gbox.shape.x, height=gbox.shape.y,
        )  # fmt: skip

    def geobox(self) -> GeoBox:
        """The GeoBox this spec describes."""
        return GeoBox((self.height, self.width), Affine(*self.affine), self.crs)


class RunPlan(BaseModel):
    """Everything a run needs before touching pixels: AOI, grid, scenes per period, settings."""

    aoi_name: str
    aoi_wkt: str
    grid: GridSpec
    before: list[Scene]
    after: list[Scene]
    settings: Settings

    @property
    def cloud_masked(self) -> bool:
        """True when every scene has an SCL layer (Level-1C scenes are used unmasked)."""
        return all(s.has_scl for s in [*self.before, *self.after])

    #: Tile edges fall on rows and columns anchor + k * tile size (see `grid.tile_anchor`).
    tile_anchor: tuple[int, int] = (0, 0)

    @property
    def halo(self) -> int:
        """Tile overlap wide enough for every neighbourhood operation of the tile function."""
        return halo_px(self.settings)

    def tiles(self) -> list[Tile]:
        """The processing tiles of the run grid, row by row."""
        return tiles(self.grid.geobox(), self.settings.tile_size_px, self.tile_anchor)

    def notes(self) -> list[str]:
        """Facts about the run a reader of its outputs must know."""
        out = []
        if not self.cloud_masked:
            unmasked = [s.id for s in [*self.before, *self.after] if not s.has_scl]
            out.append(f"no cloud mask applied (no SCL band, e.g. Level-1C): {', '.join(unmasked)}")
        return out


def halo_px(settings: Settings) -> int:
    """Tile overlap wide enough for every neighbourhood operation of the tile function."""
    coreg = math.ceil(settings.coregistration.max_shift_px) + 2
    return max(settings.halo_px, change.HALO_PX, coreg, settings.mask.dilate_px)


class PairModel(BaseModel):
    """What is fitted once per before/after pair and applied identically to every tile."""

    shift: ShiftField
    normalization: normalize.Normalization
    change: change.ChangeModel


@dataclass
class Composite:
    """A period's composite on a grid window: (bands, y, x) float32 reflectance and look counts."""

    bands: np.ndarray
    valid_looks: np.ndarray


@dataclass
class TileResult:
    """Per-tile outputs, cropped to the tile (halo removed)."""

    score: np.ndarray
    classes: np.ndarray
    looks_before: np.ndarray
    looks_after: np.ndarray
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per stage (StageClock names)


def _check_scenes(label: str, scenes: Sequence[Scene]) -> None:
    if not scenes:
        raise InputError(f"{label} period: no scenes found")
    for scene in scenes:
        require_bands(scene, CHANGE_BANDS)


def plan_run(aoi: AOI | None, before: Sequence[Scene], after: Sequence[Scene], settings: Settings) -> RunPlan:
    """Grid and tiles for a run: the AOI's UTM grid clipped to the imagery, or, with no AOI,
    the native grid of the first before scene's 10 m band (the reference is then not resampled)."""
    _check_scenes("before", before)
    _check_scenes("after", after)
    before_fp = _union([s.footprint for s in before])
    after_fp = _union([s.footprint for s in after])
    common = before_fp.intersection(after_fp)
    if common.is_empty or common.area <= 0:
        raise InputError(f"before scenes ({before[0].id}) and after scenes ({after[0].id}) do not overlap")
    if aoi is None:
        gbox = _native_geobox(before[0])
        aoi = from_geometry(before[0].id, box(*gbox.geographic_extent.boundingbox), before[0].id)
    else:
        if not aoi.geometry.intersects(common):
            raise InputError(f"AOI {aoi.name} lies outside the scenes (imagery covers {_fmt_bounds(common)})")
        gbox = clip_geobox(run_geobox(aoi, settings.resolution_m), common.intersection(aoi.geometry))
    return RunPlan(
        aoi_name=aoi.name, aoi_wkt=aoi.geometry.wkt, grid=GridSpec.from_geobox(gbox),
        before=list(before), after=list(after), settings=settings,
        tile_anchor=_tile_anchor(before[0], gbox, settings),
    )  # fmt: skip


def _tile_anchor(scene: Scene, gbox: GeoBox, settings: Settings) -> tuple[int, int]:
    """Tile edges placed on the block grid of the first before scene's files (one granule's bands
    share their origin), so tiles decode each input block once (`grid.tile_anchor`)."""
    grids = [g for band in (*CHANGE_BANDS, "SCL") if band in scene.assets
             if (g := block_grid(scene.assets[band], gbox)) is not None]  # fmt: skip
    return tile_anchor(grids, settings.tile_size_px, halo_px(settings) + READ_REACH_PX)


def _native_geobox(scene: Scene) -> GeoBox:
    import rasterio

    with rasterio.open(scene.assets["B02"]) as src:
        return GeoBox.from_rio(src)


def _union(geoms: Sequence[BaseGeometry]) -> BaseGeometry:
    from shapely.ops import unary_union

    return unary_union(geoms)


def _fmt_bounds(geom: object) -> str:
    b = geom.bounds  # type: ignore[attr-defined]
    return f"lon {b[0]:.3f}..{b[2]:.3f}, lat {b[1]:.3f}..{b[3]:.3f}"


def read_composite(
    source: SceneSource,
    scenes: Sequence[Scene],
    gbox: GeoBox,
    settings: Settings,
    bands: Sequence[str] = CHANGE_BANDS,
    kept: KeptLooks | None = None,
) -> Composite:
    """Read, mask and composite one period's `bands` on `gbox` (one window of the grid); scenes
    that leave too little of the window clear are skipped (see `read_look`). The looks are read
    straight into one stack, as 16-bit digital numbers when the source has them (half the bytes of
    reflectance), and masked and turned into reflectance inside the composite pass. With `kept`
    (the records of these scenes on this window, see `look_store`), a scene's clear mask and NIR
    are taken from its record when there is one, else put into one once read (when `kept` writes)."""
    if isinstance(source, DigitalNumberSource):
        try:
            return _composite_of_looks(source, scenes, gbox, settings, bands, np.dtype(np.uint16), kept)
        except UnfitValues:
            pass  # not 16-bit digital numbers (e.g. float files): read them as reflectance
    return _composite_of_looks(source, scenes, gbox, settings, bands, np.dtype(np.float32))


def _composite_of_looks(
    source: SceneSource,
    scenes: Sequence[Scene],
    gbox: GeoBox,
    settings: Settings,
    bands: Sequence[str],
    dtype: np.dtype,
    kept: KeptLooks | None = None,
) -> Composite:
    """`read_composite` with the looks read as `dtype`: uint16 digital numbers or float32 reflectance
    (`kept` records only with digital numbers of a window that reads the kept band)."""
    shape = (gbox.shape.y, gbox.shape.x)
    looks = np.empty((len(scenes), len(bands), *shape), dtype)  # pages of skipped looks stay untouched
    clear = np.empty((len(scenes), *shape), np.bool_)
    nir = bands.index(KEPT_BAND) if KEPT_BAND in bands and dtype == np.uint16 else None
    days: list[int] = []
    offsets: list[float] = []
    for i, scene in enumerate(scenes):
        n = len(days)
        if kept is not None and nir is not None and isinstance(source, DigitalNumberSource):
            found = _kept_look(source, scene, bands, gbox, kept, i, nir, looks[n], clear[n], settings.mask)
        else:
            found = (
                read_look(source, scene, bands, gbox, settings.mask, out=looks[n], clear=clear[n]) is not None
            )
        if found:
            days.append(scene.acquired.toordinal())
            offsets.append(scene.boa_offset)
    if not days:
        empty = np.full((len(bands), *shape), np.nan, np.float32)
        return Composite(bands=empty, valid_looks=np.zeros(shape, np.uint8))
    n = len(days)
    dn_offsets = offsets if dtype == np.uint16 else None
    stack, count = median_composite(looks[:n], clear=clear[:n], days=days, boa_offsets=dn_offsets)
    return Composite(bands=stack, valid_looks=count)


def _kept_look(
    source: DigitalNumberSource,
    scene: Scene,
    bands: Sequence[str],
    gbox: GeoBox,
    kept: KeptLooks,
    index: int,
    nir: int,
    out: np.ndarray,
    clear: np.ndarray,
    mask: MaskParams,
) -> bool:
    """`read_look` of scene `index` into `out` (bands, y, x) uint16 and `clear`, its clear mask and
    NIR (band `nir`) taken from its record in `kept` when there is one (only the other bands are
    then read), else read and put there. False when the scene is skipped on this window."""
    taken = kept.take(index, clear, out[nir])
    if taken is None:
        found = read_look(source, scene, bands, gbox, mask, out=out, clear=clear) is not None
        kept.put(index, clear if found else None, out[nir])
        return found
    if taken:
        for start, stop in ((0, nir), (nir + 1, len(bands))):
            if stop > start:
                source.read_dn(scene, bands[start:stop], gbox, out[start:stop])
    return taken


def read_composite_by_strips(
    source: SceneSource,
    scenes: Sequence[Scene],
    gbox: GeoBox,
    settings: Settings,
    rows: int = FIT_STRIP_ROWS,
    phase: int = 0,
) -> Composite:
    """`read_composite` of a large window, `rows` rows at a time, for the memory of one strip's looks:
    each strip is read with a halo as wide as the cloud-mask dilation, so its values are the window's
    (a scene is skipped per strip, as per tile, when `mask.min_valid_share` asks for a share). Strip
    edges fall on the rows `phase` + k * `rows` (see `fit_strip_phase`)."""
    ny, nx = gbox.shape.y, gbox.shape.x
    out = Composite(np.empty((len(CHANGE_BANDS), ny, nx), np.float32), np.empty((ny, nx), np.uint8))
    for padded, strip, inner in row_strips(gbox, settings.mask.dilate_px, rows, phase):
        part = read_composite(source, scenes, padded, settings)
        out.bands[:, strip] = part.bands[:, inner]
        out.valid_looks[strip] = part.valid_looks[inner]
    return out


def row_strips(
    gbox: GeoBox, halo: int, rows: int = FIT_STRIP_ROWS, phase: int = 0
) -> list[tuple[GeoBox, slice, slice]]:
    """`gbox` cut into strips of `rows` rows (edges on rows `phase` + k * `rows`), each padded by
    `halo` rows inside `gbox`: the padded window, the strip's rows in `gbox` and the same rows in
    the padded window."""
    return [
        (gbox[p0:p1, :], slice(r0, r1), slice(r0 - p0, r1 - p0))
        for r0, r1, p0, p1 in _strip_bounds(gbox.shape.y, halo, rows, phase)
    ]


def _strip_bounds(ny: int, halo: int, rows: int, phase: int = 0) -> list[tuple[int, int, int, int]]:
    """(first row, end row, padded first row, padded end row) of each strip of `rows` rows of `ny`,
    after a first strip of `phase` % `rows` rows."""
    first = min(phase % rows, ny)
    bounds = [(0, first)] if first else []
    bounds += [(first + r0, first + r1) for r0, r1 in strip_bounds(ny - first, rows)]
    return [(r0, r1, max(0, r0 - halo), min(ny, r1 + halo)) for r0, r1 in bounds]


def fit_strip_phase(plan: RunPlan, row0: int) -> int:
    """Where the fit window's strips (it starts at grid row `row0`) end, so that each strip's padded
    window ends on a block boundary of the inputs and each block row is decoded once: the tiles'
    edges lie `halo` + 1 rows above a boundary (`RunPlan.tile_anchor`), a strip's `mask.dilate_px`
    + 1 rows above one (FIT_STRIP_ROWS is the inputs' 512 px block height)."""
    boundary = plan.tile_anchor[0] + plan.halo + READ_REACH_PX
    return (boundary - plan.settings.mask.dilate_px - READ_REACH_PX - row0) % FIT_STRIP_ROWS


def align_in_place(
    shift: ShiftField, bands: np.ndarray, origin: tuple[int, int], halo: int, rows: int = FIT_STRIP_ROWS
) -> None:
    """``bands[:] = shift.apply(bands, origin)`` a strip of `rows` rows at a time, for the memory of
    a strip: each strip is resampled from its rows plus `halo` rows (at least the shift's reach)
    above and below, the rows above kept aside before the previous strip overwrote them."""
    if rows < halo:
        raise ValueError(f"align_in_place: strips of {rows} rows cannot keep a {halo} row halo")
    above = bands[..., :0, :].copy()  # original rows just above the current strip
    for r0, r1, p0, p1 in _strip_bounds(bands.shape[-2], halo, rows):
        padded = np.concatenate([above[..., above.shape[-2] - (r0 - p0) :, :], bands[..., r0:p1, :]], axis=-2)
        above = bands[..., max(r0, r1 - halo) : r1, :].copy()
        bands[..., r0:r1, :] = shift.apply(padded, (origin[0] + p0, origin[1]))[..., r0 - p0 : r1 - p0, :]


def read_look(
    source: SceneSource,
    scene: Scene,
    bands: Sequence[str],
    gbox: GeoBox,
    mask: MaskParams,
    *,
    out: np.ndarray | None = None,
    clear: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray] | None:
    """One scene's `bands` on `gbox` as (bands, y, x) reflectance (NaN no data) and its clear-sky
    mask (y, x), written into `out` and `clear` when given (a uint16 `out` takes the digital numbers
    of a `DigitalNumberSource` instead of reflectance); None when its SCL (read first) leaves
    no pixel, or less than `mask.min_valid_share`, of the window clear: then its spectral bands are
    never read (a remote source downloads nothing more for it). Level-1C scenes (no SCL) are clear."""
    shape = (gbox.shape.y, gbox.shape.x)
    sky = np.empty(shape, np.bool_) if clear is None else clear
    if scene.has_scl:
        clear_of_flags(source.read(scene, ["SCL"], gbox)["SCL"], mask, out=sky)
        n_clear = np.count_nonzero(sky)
        if n_clear == 0 or n_clear / sky.size < mask.min_valid_share:
            return None
    else:
        sky[...] = True
    spectral = np.empty((len(bands), *shape), np.float32) if out is None else out
    if spectral.dtype == np.uint16 and isinstance(source, DigitalNumberSource):
        source.read_dn(scene, bands, gbox, spectral)
    else:
        source.read(scene, bands, gbox, out=spectral)
    return spectral, sky


def _fit_window(gbox: GeoBox) -> tuple[GeoBox, tuple[int, int]]:
    """The central window of the grid, at most FIT_WINDOW_PX on a side, and its origin."""
    ny, nx = gbox.shape.y, gbox.shape.x
    h, w = min(ny, FIT_WINDOW_PX), min(nx, FIT_WINDOW_PX)
    r0, c0 = (ny - h) // 2, (nx - w) // 2
    return gbox[r0 : r0 + h, c0 : c0 + w], (r0, c0)


def read_windows(plan: RunPlan) -> list[GeoBox]:
    """Every grid window a run reads from each scene: the strips of the fit window, then every tile
    with its halo (the tie-point NIR reads are parts of the padded tile windows), so a prefetch of these
    windows is all the run will read."""
    gbox = plan.grid.geobox()
    window, (row0, _) = _fit_window(gbox)
    strips = row_strips(window, plan.settings.mask.dilate_px, phase=fit_strip_phase(plan, row0))
    fit = [padded for padded, _, _ in strips]
    return [*fit, *(tile.padded(gbox, plan.halo)[0] for tile in plan.tiles())]


def tile_tie_points(
    plan: RunPlan, source: SceneSource, tile: Tile, looks: LookStore | None = None
) -> TilePoints:
    """Match the NIR composites of both periods on the tie-point grid of one tile (with its halo).

    With `looks` (while its budget holds the tile's records), the whole padded tile is read and
    each look's clear mask and NIR are kept there for the tile pass. Otherwise only the part of the
    tile the windows need is read and composited (`WindowGrid.extent`, grown by the mask dilation
    so the composite there equals the whole tile's), and a tile too small for a window reads nothing."""
    padded, origin, _ = tile.padded(plan.grid.geobox(), plan.halo)
    coreg = plan.settings.coregistration
    shape = (padded.shape.y, padded.shape.x)
    grid = coregister.WindowGrid.on(shape, coreg)
    extent = grid.extent(plan.settings.mask.dilate_px, shape)
    n_looks = len(plan.before) + len(plan.after)
    keeping = (
        looks if looks is not None and looks.has_room(n_looks * record_bytes(shape[0] * shape[1])) else None
    )
    if keeping is not None:
        extent = (0, shape[0], 0, shape[1])
    points = concat_tie_points([])
    if extent is not None:
        top, bottom, left, right = extent
        part = padded[top:bottom, left:right]
        records = {p: keeping.looks(tile, p, writing=True) if keeping else None for p in ("before", "after")}
        before = read_composite(source, plan.before, part, plan.settings, ("B08",), records["before"])
        after = read_composite(source, plan.after, part, plan.settings, ("B08",), records["after"])
        points = coregister.match_windows(
            before.bands[0], after.bands[0], coreg, origin=(origin[0] + top, origin[1] + left),
            grid=grid.moved(top, left),
        )  # fmt: skip
    r0, c0 = tile.row0, tile.col0
    inside = (points.rows >= r0) & (points.rows < r0 + tile.height)
    inside &= (points.cols >= c0) & (points.cols < c0 + tile.width)
    kept = coregister.TiePoints(
        *(getattr(points, f)[inside] for f in coregister.TiePoints.__dataclass_fields__)
    )
    centre = (r0 + (tile.height - 1) / 2.0, c0 + (tile.width - 1) / 2.0)
    return TilePoints(tile.name, (tile.row, tile.col), centre, kept)


@long_lived_frozen()  # the imports and the plan: not scanned by the garbage collector during the fit
def fit_pair(
    plan: RunPlan, source: SceneSource, clock: StageClock | None = None, looks: LookStore | None = None
) -> PairModel:
    """Fit co-registration (per tile, global fallback), radiometric normalisation and the change
    model once for the pair; `clock` collects the seconds per stage; `looks` keeps what the tie
    points decode for the tile pass (see `look_store`).

    The fit window's two periods and the tiles' tie points are read in one pool (periods first),
    so a thread that finishes its period starts on the tiles: the READ stage ends when both window
    composites are in (tie points of some tiles included), COREG covers the tiles still running."""
    clock = clock or StageClock()
    keep_freed_arrays()  # the strips' and tiles' arrays are reused, not faulted in afresh
    gbox, origin = _fit_window(plan.grid.geobox())
    params = plan.settings
    coreg = params.coregistration
    shift = ShiftField()
    pool = ThreadPoolExecutor(max_workers=max(2, plan.settings.workers or os.cpu_count() or 1))
    try:
        with clock.stage(READ):
            phase = fit_strip_phase(plan, origin[0])
            periods = [
                pool.submit(read_composite_by_strips, source, scenes, gbox, params, phase=phase)
                for scenes in (plan.before, plan.after)
            ]
            tiles = [
                pool.submit(tile_tie_points, plan, source, t, looks) for t in plan.tiles() if coreg.enabled
            ]
            before, after = (f.result() for f in periods)
        if not any_valid(before.bands) or not any_valid(after.bands):
            raise InputError("no valid (cloud-free) pixels common to the before and after scenes")
        if coreg.enabled:
            with clock.stage(COREG):
                points = [f.result() for f in tiles]
                shift = fit_shift_field(points, coreg)
                if shift.global_model.method == "none":
                    # Too few tie points in the whole run: one large window on the central composite.
                    central = coregister.estimate_shift(
                        before.bands[COREG_BAND], after.bands[COREG_BAND], coreg, origin=origin
                    )
                    shift = fit_shift_field(points, coreg, fallback=central)
                align_in_place(shift, after.bands, origin, plan.halo)
    finally:
        pool.shutdown(cancel_futures=True)  # on an error, the tiles not started yet are dropped
    with clock.stage(CHANGE):
        b, a = sample_pixels(before.bands, after.bands, FIT_MAX_PIXELS)
        del before, after  # the window composites: only the sample is used from here on
        if b.shape[-1] == 0:
            raise InputError("no valid pixels common to the before and after scenes after co-registration")
        norm, no_change = normalize.fit_normalization_no_change(b, a)
        model = change.fit_change_model(b, normalize.apply_normalization(a, norm), params.change, no_change)
    drop_read_caches()  # the tile pass reads other blocks first
    release_free_memory()  # the window composites and the sample are gone
    return PairModel(shift=shift, normalization=norm, change=model)


def process_tile(
    before: Composite,
    after: Composite,
    model: PairModel,
    settings: Settings,
    origin: tuple[int, int] = (0, 0),
    clock: StageClock | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The per-tile change function: co-register, normalise, score and classify one window.

    Pure: arrays in, arrays out. `origin` is the window's (row, col) in the run grid, so the
    fitted shift field is applied exactly as on the whole scene; `clock` collects stage seconds.
    """
    clock = clock or StageClock()
    norm = model.normalization
    if settings.coregistration.enabled:
        with clock.stage(COREG):  # shifted and normalised in one pass
            after_n = model.shift.apply(after.bands, origin, gain=norm.gain, offset=norm.offset)
    else:
        with clock.stage(CHANGE):
            after_n = normalize.apply_normalization(after.bands, norm)
    with clock.stage(CHANGE):
        score = change.change_score(before.bands, after_n, model.change, settings.change)
        classes = change.change_classes(before.bands, after_n, score, model.change, settings.change)
    return score, classes


def run_tile(
    plan: RunPlan, model: PairModel, source: SceneSource, tile: Tile, looks: LookStore | None = None
) -> TileResult:
    """Read both periods for one tile (with halo; clear masks and NIR from `looks` where the pair
    fit kept them), run `process_tile`, crop the halo."""
    gbox = plan.grid.geobox()
    padded, origin, inner = tile.padded(gbox, plan.halo)
    clock = StageClock()
    with clock.stage(READ):
        records = {p: looks.looks(tile, p, writing=False) if looks else None for p in ("before", "after")}
        before = read_composite(source, plan.before, padded, plan.settings, kept=records["before"])
        after = read_composite(source, plan.after, padded, plan.settings, kept=records["after"])
    score, classes = process_tile(before, after, model, plan.settings, origin, clock)
    return TileResult(
        score=score[inner], classes=classes[inner],
        looks_before=before.valid_looks[inner], looks_after=after.valid_looks[inner],
        seconds=clock.seconds,
    )  # fmt: skip
