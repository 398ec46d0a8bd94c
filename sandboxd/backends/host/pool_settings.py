"""What a warm pool may be told: its own module, so that the backends' settings (and through
them the daemon's) need pydantic alone, not the pool's machinery."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class PoolSettings(BaseModel):
    """Warm sandboxes per profile (e.g. per language), bounded and adapting to load."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="False: every run builds its sandbox on demand.")
    min_size: int = Field(1, ge=0, description="Kept ready even when idle.")
    max_size: int = Field(4, ge=0, le=64, description="Never more ready or in preparation.")
    idle_s: float = Field(30.0, gt=0, description="Shrink by one after this long without a miss.")
    max_age_s: float = Field(300.0, gt=0, description="A ready sandbox older is replaced.")
    max_preparing: int = Field(2, ge=1, description="Sandboxes prepared at once.")
