"""What each site deploys: per-site adaptations of the global model, and the choice among them on validation.

Federated training gives one model for everyone; a site whose patients, class mix or
scanner differ may be better served by an adaptation of it, or by its own local-only
model. Each method here is a config option (`adaptation.methods`), and `selection.py`
lets every site choose, on its own validation split only, what it deploys.
"""
