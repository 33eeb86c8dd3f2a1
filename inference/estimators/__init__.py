"""The estimators: bounds (ELBO, IW), exact oracles, AIS and BDMC, evidence, diagnostics,
the gap decomposition, the bound checks and the comparison table."""
