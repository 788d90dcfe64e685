"""Latent walks: frame spacing along the path, renderers, frames on disk and videos, and the render itself."""
