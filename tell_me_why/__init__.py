"""Train an explainable adversarial autoencoder (xAAEnet) on a two-class image task and rank the image cues behind its decision.

Modules:

- `tell_me_why.feature_scores`: Eleven hand-crafted image cues (brightness, colour, symmetry, texture, frequency) computed for a list of image files in one pass, as a pandas table whose rows follow the input order.
- `tell_me_why.fidelity`: Checks that tell whether a cue ranking can be trusted: image sets with one planted cue (does the pipeline find it?), sanity checks against a randomly initialised model and a model trained on shuffled labels (does the ranking depend on what the model learned?), and a bootstrap of the ranking (would it survive other images?).
- `tell_me_why.latent_figures`: Pictures of the latent code `z` drawn while training: an unsupervised t-SNE map after the adversarial and autoencoder phases, and a supervised PLS biplot after the classifier phase.
- `tell_me_why.visualization`: Which image cues line up with the model's decision axis? A supervised PLS finds the direction of the latent code `z` that separates the two classes (PLS1); each hand-crafted cue (brightness, colour, symmetry, texture, frequency) is then correlated with that axis, ranked, tested against chance, and drawn."""

__version__ = "0.1.0"
