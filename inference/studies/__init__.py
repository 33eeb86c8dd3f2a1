"""The studies behind the command line: the collapse experiments, the remedies, the beta
frontier, the BDMC sandwich, the registry of built-in pairs, plots and ``lvm`` itself."""
