"""Privacy for the federation: what a site sends, and what anyone can learn from it.

- `secagg.py` (with `shamir.py`, `fixed_point.py`, `crypto.py`, `messages.py`):
  secure aggregation after Bonawitz et al. 2017, so the coordinator sees only sums.
- `dp_sgd.py`: sample-level DP-SGD at a site through Opacus (Abadi et al. 2016).
- `site_dp.py`: site-level DP on the aggregate, DP-FedAvg (McMahan et al. 2018).
- `accountant.py`: a per-site privacy budget over Opacus's RDP accountant.
- `egress.py`: the allow-list every outgoing message of a site is checked against.
- `simulation.py`: the in-process rounds with these hooks, until the engine takes them.
"""
