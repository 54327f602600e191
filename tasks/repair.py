"""repair-registry: the doctor's check and fixes on the products a run touched."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from factory.adapters.prefect_env import retry_unless_user_error
from factory.adapters.registry.doctor import DoctorReport, repair
from factory.adapters.registry.names import STAGING
from factory.adapters.registry.registry import Registry
from factory.settings import Settings


@task(
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=[5, 30],
    retry_condition_fn=retry_unless_user_error,
)
def repair_registry(settings: Settings, products: list[str], promote: bool) -> DoctorReport:
    """Fix what an earlier crash or outage left half-done for these products, and log it.

    Under least privilege the trainer fixes staging only (production is the promoter's)."""
    if settings.least_privilege:
        promote, environments = False, [STAGING]
    else:
        environments = None
    report = repair(
        Registry(settings), settings.state_dir, promote, products, environments=environments
    )
    log = get_run_logger()
    for line in report.lines():
        log.warning("repaired %s", line)
    return report
