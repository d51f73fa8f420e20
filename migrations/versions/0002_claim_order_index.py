"""claim order index matches the claim query's ORDER BY; index for newest-first listing

The claim query orders by priority DESC, created_at, id. The first index (state, priority,
created_at) made SQLite sort every queued job of the top priority on each claim: O(queue) per
claim. An index in the query's own order makes the best job the first entry.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_claim_order")
        batch.create_index(
            "ix_jobs_claim_order", ["state", sa.text("priority DESC"), "created_at", "id"]
        )
        batch.create_index("ix_jobs_created", ["created_at"])


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_created")
        batch.drop_index("ix_jobs_claim_order")
        batch.create_index("ix_jobs_claim_order", ["state", "priority", "created_at"])
