"""Train an explainable adversarial autoencoder (xAAEnet) on a two-class image task and rank the image cues behind its decision."""

__version__ = "0.1.0"
