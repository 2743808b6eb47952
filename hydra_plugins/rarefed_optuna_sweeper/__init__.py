"""`hydra/sweeper=optuna`: Hydra's sweeper interface over a current Optuna (the study loop: federation/sweeps/search.py).

hydra-optuna-sweeper 1.3.0 pins optuna<3: Optuna 2.10 computes no parameter importances
and no plots under NumPy 2, and its SQLite storage fails under SQLAlchemy 2. This plugin
keeps its config keys (sampler, direction, study_name, storage, n_trials, n_jobs, params)
and override syntax, so a search space reads the same.
"""
