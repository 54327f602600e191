"""Every Prefect @task of the factory, one file per stage (thin wrappers over factory)."""

from factory.adapters.prefect_env import install_user_error_filter

# Every flow imports its tasks from here, also when a worker loads `flows/<name>.py` by path
# (flows/__init__.py does not run then): user mistakes reach its run logs as one line.
install_user_error_filter()
