"""RollingDepth: temporally consistent video depth from a single-image diffusion model."""

from __future__ import annotations

from rollingdepth._version import __version__

__all__ = ["RollingDepthOutput", "RollingDepthPipeline", "CrossFrameAttnProcessor", "__version__"]


def __getattr__(name: str):
    # Lazy imports: torch/diffusers take seconds to import, `run-video --help` should not.
    if name in ("RollingDepthPipeline", "RollingDepthOutput"):
        from rollingdepth.runtime import pipeline as rollingdepth_pipeline

        return getattr(rollingdepth_pipeline, name)
    if name == "CrossFrameAttnProcessor":
        from rollingdepth.method.cross_frame_attention import CrossFrameAttnProcessor

        return CrossFrameAttnProcessor
    raise AttributeError(f"module 'rollingdepth' has no attribute {name!r}")
