"""What the consortium watches every round: data drift, unusual updates, each site's contribution, subgroups.

Everything here works on aggregates a site may share (feature means, update
norms, metrics with small counts suppressed), never on patient records.
"""
from federation.governance.monitoring.anomaly import anomaly_flags, update_geometry
from federation.governance.monitoring.contribution import leave_one_out
from federation.governance.monitoring.drift import (
    DriftMonitor,
    drift_score,
    pool_summaries,
)
from federation.governance.monitoring.features import feature_summary
from federation.governance.monitoring.subgroups import SubgroupMonitor, subgroup_metrics

__all__ = [
    "DriftMonitor",
    "SubgroupMonitor",
    "anomaly_flags",
    "drift_score",
    "feature_summary",
    "leave_one_out",
    "pool_summaries",
    "subgroup_metrics",
    "update_geometry",
]
