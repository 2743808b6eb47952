"""The research driver: the main job over seeds, its baselines and its report (scripts/train.py)."""
