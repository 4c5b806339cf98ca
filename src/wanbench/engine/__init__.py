"""The generation: text encode -> denoise (two experts, CFG) -> VAE decode -> save."""
