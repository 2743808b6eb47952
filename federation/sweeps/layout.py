"""What a search leaves in its sweep folder, beside the trials' job folders (read by scripts/collect_sweep.py)."""

RESULTS = "optimization_results.yaml"  # what was chosen, on which validation figures, and the one test run
STUDY_DB = "optuna.db"                 # the Optuna study (SQLite): every trial's parameters and values
TEST_JOB = "test_of_best"              # the job folder of the best trial's test run
REPORT = "report"                      # scripts/collect_sweep.py's plots and markdown report
