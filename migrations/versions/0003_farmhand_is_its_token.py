"""a farmhand is its token: one farmhand row per token, the name for display only

Until now a farmhand was the name it sent: one token could speak as many names, and a farmhand
revoked or quarantined as ``pc1`` came back as ``pc1-renamed`` with the same token and got work.
From here the row belongs to the token (unique ``token_id``) and the name is a label that may
change. Where one token had several rows, the one seen last stays that token's farmhand; the
others keep their history (the attempts and events that name them) without a token.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Keep, for each token, only the row it used last (ties: the newest row).
    op.execute(
        sa.text(
            """
            UPDATE farmhands SET token_id = NULL
            WHERE token_id IS NOT NULL AND id <> (
                SELECT f2.id FROM farmhands AS f2
                WHERE f2.token_id = farmhands.token_id
                ORDER BY f2.last_seen_at DESC, f2.id DESC
                LIMIT 1
            )
            """
        )
    )
    with op.batch_alter_table("farmhands") as batch:
        batch.drop_constraint("uq_farmhands_name", type_="unique")
        batch.create_unique_constraint("uq_farmhands_token_id", ["token_id"])


def downgrade() -> None:
    # Names were unique before: suffix the rows whose name another row has too.
    op.execute(
        sa.text(
            """
            UPDATE farmhands SET name = name || '-' || CAST(id AS VARCHAR(20))
            WHERE EXISTS (
                SELECT 1 FROM farmhands AS f2 WHERE f2.name = farmhands.name AND f2.id < farmhands.id
            )
            """
        )
    )
    with op.batch_alter_table("farmhands") as batch:
        batch.drop_constraint("uq_farmhands_token_id", type_="unique")
        batch.create_unique_constraint("uq_farmhands_name", ["name"])
