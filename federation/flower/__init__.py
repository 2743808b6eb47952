"""The real deployment on Flower: a coordinator (SuperLink + ServerApp) and sites (SuperNodes + ClientApp).

Flower is the transport only. Sites train with `federation.site.Site.train` and the
coordinator aggregates with `federation.strategies.*`, exactly as the in-process
engine does; this package converts updates to Flower records, runs the round loop
over the grid (push, then pull replies), checkpoints the coordinator after every round, and
starts the processes (`deployment.py`).
"""
