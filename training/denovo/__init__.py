"""De novo structure proposals: a SELFIES variational autoencoder reached from MS/MS spectra.

* :mod:`.vocab`: SMILES <-> SELFIES tokens <-> integer arrays (every decoded token string is a valid molecule);
* :mod:`.data`: the VAE's structure set (a SMILES file such as MOSES plus the lake's compounds, never a
  validation or test InChIKey-14 of the lake's split) and the training-split library spectra;
* :mod:`.model`: the GRU VAE and the binned-spectrum MLP that maps a spectrum to the VAE latent;
* :mod:`.train`: both trained in one Ray Train run (:func:`~.train.train_denovo`), registered under
  ``<lake>/models/_denovo/<model_id>/``;
* :mod:`.sample`: proposals around the spectrum's latent point or a parent's (``--near``), filtered by
  molecular formula, ranked by latent likelihood;
* :mod:`.job` / :mod:`.tables`: ``speclake denovo`` writing the ``denovo_candidates`` lake table.
"""
