"""Sweeps and searches: the search space, the objective a trial returns, the study loop, and the sweep report."""
