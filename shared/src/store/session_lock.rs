//! A session-level advisory lock on a pool connection of its own: how processes that start
//! together take turns on DDL (<https://www.postgresql.org/docs/15/explicit-locking.html#ADVISORY-LOCKS>).
//! Unlike a transaction-level lock it spans many transactions (one per table), and it is
//! released with its connection if releasing fails.

use sqlx::{PgConnection, PgPool, Postgres, pool::PoolConnection};

use crate::Result;

/// A held lock; [`SessionLock::release`] gives it back.
pub(super) struct SessionLock {
    conn: PoolConnection<Postgres>,
    key: &'static str,
}

impl SessionLock {
    /// Waits for the lock named `key` (hashed with `hashtextextended`) on a connection of `pool`.
    pub(super) async fn acquire(pool: &PgPool, key: &'static str) -> Result<Self> {
        let mut conn = pool.acquire().await?;
        sqlx::query("SELECT pg_advisory_lock(hashtextextended($1, 0))").bind(key).execute(&mut *conn).await?;
        Ok(Self { conn, key })
    }

    /// The lock's connection, for work that may run on it.
    pub(super) fn conn(&mut self) -> &mut PgConnection {
        &mut self.conn
    }

    /// Releases the lock; when that fails, the connection is closed, which releases it.
    pub(super) async fn release(mut self) {
        let unlocked = sqlx::query("SELECT pg_advisory_unlock(hashtextextended($1, 0))")
            .bind(self.key)
            .execute(&mut *self.conn)
            .await;
        if let Err(err) = unlocked {
            self.conn.close_on_drop();
            tracing::warn!(%err, lock = self.key, "cannot release an advisory lock; closing its connection");
        }
    }
}
