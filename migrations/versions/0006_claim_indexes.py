"""the claim order index in its order again; an index for a farmhand's held jobs

On SQLite, migration 0005 rebuilt the jobs table (a batch operation: SQLite cannot add a foreign
key in place), and the rebuild re-created ``ix_jobs_claim_order`` from reflection, which lost
``priority DESC``. With the index's direction no longer the ORDER BY's, every claim sorted the
whole top-priority queue again (the regression 0002 had fixed). Re-create it as 0002 did, outside
a batch so nothing rebuilds the table.

Every claim now counts the jobs its farmhand holds (slots are enforced) and looks for claims it
forgot: ``ix_jobs_farmhand`` makes both an index lookup rather than a scan of every job.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_jobs_claim_order", table_name="jobs")
    op.create_index(
        "ix_jobs_claim_order", "jobs", ["state", sa.text("priority DESC"), "created_at", "id"]
    )
    op.create_index("ix_jobs_farmhand", "jobs", ["farmhand_id", "state"])


def downgrade() -> None:
    op.drop_index("ix_jobs_farmhand", table_name="jobs")
