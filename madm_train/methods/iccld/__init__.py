"""ICCLD: inter-coder connected latent diffusion with adversarial latent alignment (as published in its figures)."""
