"""MADM (Xia et al., NeurIPS 2024): self-training with diffusion-based pseudo-labels (DPLG) and LPLR."""
