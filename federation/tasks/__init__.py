"""The tasks the federation trains for, each in one place: diagnosis/ (the open differential) and vus/ (variant scoring)."""
