"""Analyses built on the library: experiments that train and score on held-out patients, pseudo-label diagnosis."""
