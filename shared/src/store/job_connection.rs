//! The connection one job's [`Refresh`](super::Refresh) runs on, closed rather than pooled
//! unless the job ended cleanly.

use std::ops::{Deref, DerefMut};

use sqlx::{PgConnection, PgPool, Postgres, pool::PoolConnection};

use crate::Result;

/// A pooled connection for one job's [`Refresh`]. Its session may hold the job's staging
/// (temporary tables live as long as the session) or a statement cut off half-way, so it is
/// closed when dropped, not given back to the pool, unless [`Self::release`] said the job ended
/// cleanly. A job whose future is dropped (`--job-timeout`, a shutdown) never says so.
pub struct JobConnection {
    conn: PoolConnection<Postgres>,
    reusable: bool,
}

impl JobConnection {
    /// A connection of `pool`, to be closed on drop until released.
    pub async fn acquire(pool: &PgPool) -> Result<Self> {
        Ok(Self { conn: pool.acquire().await?, reusable: false })
    }

    /// The job ended with no staging left and no statement half-done: the connection may go
    /// back to the pool.
    pub fn release(&mut self) {
        self.reusable = true;
    }
}

impl Deref for JobConnection {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        &self.conn
    }
}

impl DerefMut for JobConnection {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.conn
    }
}

impl Drop for JobConnection {
    fn drop(&mut self) {
        if !self.reusable {
            self.conn.close_on_drop();
        }
    }
}
