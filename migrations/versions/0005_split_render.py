"""split render: a job may be rendered in pieces, each a job of its own

A split job is a parent; its pieces (video parts, the audio track, the join) are jobs with
``parent_id`` set, a ``kind``, what the piece renders (``piece``) and, for video parts, the one
encoder every part must use (``req_encoder_name``). ``split`` is the submitter's choice
(``auto`` or ``never``). docs/architecture.md, "Split render".

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


# What a job gains: where a piece belongs, what it is and renders, the encoder a part must use,
# and the submitter's choice.
NEW_COLUMNS = (
    ("parent_id", sa.String(length=32), {}),
    ("kind", sa.String(length=8), {"nullable": False, "server_default": "render"}),
    ("piece", sa.JSON(), {}),
    ("req_encoder_name", sa.String(length=64), {}),
    ("split", sa.String(length=8), {"nullable": False, "server_default": "auto"}),
)


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        for name, kind, options in NEW_COLUMNS:
            batch.add_column(sa.Column(name, kind, **options))
        batch.create_foreign_key(
            "fk_jobs_parent_id_jobs", "jobs", ["parent_id"], ["id"], ondelete="CASCADE"
        )
        batch.create_index("ix_jobs_parent", ["parent_id"])


def downgrade() -> None:
    op.execute(sa.text("DELETE FROM jobs WHERE parent_id IS NOT NULL"))  # the pieces go
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_parent")
        batch.drop_constraint("fk_jobs_parent_id_jobs", type_="foreignkey")
        for name, _, _ in reversed(NEW_COLUMNS):
            batch.drop_column(name)
