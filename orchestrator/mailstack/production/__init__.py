"""Read what a user copied off a production mail server (`mailstack up --from DIR`) into a Plan."""

from mailstack.production.detect import Sources, classify, read_dir
from mailstack.production.dump import iter_statements, load_dump, stats
from mailstack.production.model import (
    DovecotSql,
    Dropped,
    DumpStats,
    Kept,
    MapFile,
    ProductionInputError,
    Rewritten,
    ServicePlan,
)
from mailstack.production.plan import Plan, make_plan

__all__ = [
    "DovecotSql", "Dropped", "DumpStats", "Kept", "MapFile", "Plan", "ProductionInputError", "Rewritten",
    "ServicePlan", "Sources", "classify", "iter_statements", "load_dump", "make_plan", "read_dir", "stats",
]
