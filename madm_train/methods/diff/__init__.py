"""DIFF (Ji et al., ICASSP 2025): multi-timestep diffusion features, fusion and IPKL."""
