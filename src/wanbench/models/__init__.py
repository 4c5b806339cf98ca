"""Build the Wan 2.2 components: random weights on the device, a diffusers folder, or an official folder."""

from wanbench.models.components import WanComponents, build_components, detect_layout

__all__ = ["WanComponents", "build_components", "detect_layout"]
