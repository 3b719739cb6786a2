"""Settings and run parameters: defaults < config file (TOML) < environment (VIGIA_*) < CLI flags."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from imagery.errors import VigiaError
from imagery.sentinel2 import SCL_MASKED_DEFAULT
from imagery.sources.retry import RetryPolicy


class MaskParams(BaseModel):
    """Cloud/shadow masking from the scene classification layer."""

    scl_classes: tuple[int, ...] = Field(
        SCL_MASKED_DEFAULT,
        description="SCL codes treated as invalid (no data, defective, "
        "cloud shadow, cloud medium/high, thin cirrus).",
    )
    dilate_px: int = Field(3, ge=0, le=20, description="Dilation of the cloud/shadow mask, pixels.")
    min_valid_share: float = Field(
        0.0, ge=0, lt=1,
        description="A scene whose SCL leaves less than this share of a tile clear is skipped for that "
        "tile (its bands are not read); a scene with no clear pixel is always skipped.",
    )  # fmt: skip


class CoregParams(BaseModel):
    """Co-registration of the after composite onto the before composite."""

    enabled: bool = True
    window_px: int = Field(256, ge=32, le=2048, description="Tie-point matching window size.")
    grid_step_px: int = Field(200, ge=16, description="Spacing of the tie-point grid.")
    max_shift_px: float = Field(5.0, gt=0, description="Shifts larger than this are rejected.")
    min_tie_points: int = Field(
        5, ge=1, description="Fewer reliable tie points (in the run, or in a tile): global fallback."
    )
    per_tile: bool = Field(True, description="Correct the global model tile by tile where significant.")
    min_local_effect_px: float = Field(
        0.05, ge=0, description="Smallest per-tile correction applied (px); smaller ones are noise."
    )


class ChangeParams(BaseModel):
    """Change scoring, thresholding and typing."""

    score_threshold: float = Field(
        0.5, gt=0, lt=1, description="change_score above which a pixel is changed."
    )
    min_mapping_unit_ha: float = Field(
        0.2, ge=0, description="Changed patches smaller than this are dropped (hectares)."
    )
    model: dict[str, Any] = Field(
        default_factory=dict, description="Detector-specific tuning (documented in docs/)."
    )


class LayerParams(BaseModel):
    """Vector layers for planners: district attribution and the patrol priority grid."""

    districts_file: Path | None = Field(
        None, description="District polygons (any vector format); none: hotspots get no district."
    )
    district_name_field: str | None = Field(
        None, description="District name attribute (default: first of NOMBDIST, DISTRITO, NOMBRE, name)."
    )
    district_code_field: str | None = Field(
        None, description="District code (UBIGEO) attribute (default: first of IDDIST, UBIGEO, CODIGO)."
    )
    grid_cell_m: float = Field(500.0, ge=50, le=20_000, description="Priority grid square edge, metres.")


class Settings(BaseSettings):
    """Everything a run needs that is not a scene: grid, masking, detection, paths, credentials."""

    model_config = SettingsConfigDict(
        env_prefix="VIGIA_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    resolution_m: float = Field(10.0, gt=0, description="Run grid pixel size, metres.")
    tile_size_px: int = Field(1024, ge=128, le=8192, description="Processing tile edge, pixels.")
    halo_px: int = Field(16, ge=0, le=256, description="Tile overlap for neighbourhood ops.")
    mask: MaskParams = MaskParams()
    coregistration: CoregParams = CoregParams()
    change: ChangeParams = ChangeParams()
    layers: LayerParams = LayerParams()
    output_root: Path = Field(Path("output"), description="Where runs are published.")
    cache_dir: Path = Field(Path(".cache/vigia"), description="Downloaded tiles/bands cache.")
    dask_address: str | None = Field(None, description="tcp://host:8786 of an existing cluster.")
    workers: int = Field(0, ge=0, description="Local Dask threads (0: one per core).")
    worker_memory: str = Field(
        "auto", description="Memory bound of each local Dask worker, e.g. '4GiB' (auto: machine / workers)."
    )
    keep_runs: int = Field(0, ge=0, description="Published runs kept per AOI (0: keep all).")
    ledger_url: str | None = Field(
        None, description="SQLAlchemy URL of the run ledger (default: SQLite file under output_root)."
    )
    retry: RetryPolicy = RetryPolicy()
    sh_client_id: SecretStr | None = Field(
        None, description="Sentinel Hub OAuth client id (VIGIA_SH_CLIENT_ID)."
    )
    sh_client_secret: SecretStr | None = Field(
        None, description="Sentinel Hub OAuth client secret (VIGIA_SH_CLIENT_SECRET)."
    )
    sh_secret_block: str | None = Field(
        None, description="Prefect Secret block holding {client_id, client_secret} (used by flows)."
    )
    sh_base_url: str = "https://services.sentinel-hub.com"
    sh_token_url: str = "https://services.sentinel-hub.com/auth/realms/main/protocol/openid-connect/token"
    stac_url: str = "https://earth-search.aws.element84.com/v1"
    stac_collection: str = "sentinel-2-l2a"


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _env_values() -> dict[str, Any]:
    """Only the values the environment sets (so a config file sits under them)."""
    names = {k for k in os.environ if k.startswith("VIGIA_") and k != "VIGIA_CONFIG"}
    if not names:
        return {}
    return Settings().model_dump(include={k[6:].split("__")[0].lower() for k in names})


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Merge defaults < TOML config file < VIGIA_* environment < explicit overrides (CLI)."""
    path = config_file or (Path(os.environ["VIGIA_CONFIG"]) if "VIGIA_CONFIG" in os.environ else None)
    values: dict[str, Any] = {}
    if path is not None:
        try:
            values = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise VigiaError(f"config file {path}: not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise VigiaError(f"config file {path}: not valid TOML ({exc})") from None
    try:
        values = _deep_merge(values, _env_values())
        values = _deep_merge(values, {k: v for k, v in overrides.items() if v is not None})
        return Settings.model_validate(values)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise VigiaError(f"setting {where}: {err['msg']}") from None
