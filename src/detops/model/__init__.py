"""The detector: timm backbone, FPN neck, anchor-free (FCOS-style) head, and its pre/post-processing."""
