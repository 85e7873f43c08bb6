//! One way to run a statement on either backend. Every statement in this
//! crate is written once, with `$1`-style parameters (both SQLite and
//! PostgreSQL read them), and runs on whichever database the configuration
//! chose. Only DDL and catalog checks differ per backend, and live in
//! `placement.rs`.

use sqlx::postgres::{PgPool, PgRow};
use sqlx::sqlite::{SqlitePool, SqliteRow};
use sqlx::{Postgres, Sqlite, Transaction};

use crate::Result;

/// A connection pool of either backend.
#[derive(Clone, Debug)]
pub(crate) enum Db {
    Sqlite(SqlitePool),
    Pg(PgPool),
}

/// A transaction of either backend.
pub(crate) enum Tx {
    Sqlite(Transaction<'static, Sqlite>),
    Pg(Transaction<'static, Postgres>),
}

impl Db {
    pub async fn begin(&self) -> Result<Tx> {
        Ok(match self {
            Db::Sqlite(p) => Tx::Sqlite(p.begin().await?),
            Db::Pg(p) => Tx::Pg(p.begin().await?),
        })
    }

    /// A transaction that reads before it writes. On SQLite it takes the
    /// write lock up front (`BEGIN IMMEDIATE`, waiting by the busy timeout):
    /// a deferred one that read first cannot upgrade once another
    /// connection has committed, and fails at once.
    pub async fn begin_write(&self) -> Result<Tx> {
        Ok(match self {
            Db::Sqlite(p) => Tx::Sqlite(p.begin_with("BEGIN IMMEDIATE").await?),
            Db::Pg(p) => Tx::Pg(p.begin().await?),
        })
    }

    pub async fn close(&self) {
        match self {
            Db::Sqlite(p) => p.close().await,
            Db::Pg(p) => p.close().await,
        }
    }
}

impl Tx {
    pub async fn commit(self) -> Result<()> {
        match self {
            Tx::Sqlite(t) => t.commit().await?,
            Tx::Pg(t) => t.commit().await?,
        }
        Ok(())
    }
}

/// A bound value. Only the types the store uses.
#[derive(Debug, Clone)]
pub(crate) enum Arg {
    Text(Option<String>),
    Int(Option<i64>),
    Blob(Vec<u8>),
}

impl From<&str> for Arg {
    fn from(v: &str) -> Self {
        Arg::Text(Some(v.to_owned()))
    }
}
impl From<String> for Arg {
    fn from(v: String) -> Self {
        Arg::Text(Some(v))
    }
}
impl From<&String> for Arg {
    fn from(v: &String) -> Self {
        Arg::Text(Some(v.clone()))
    }
}
impl From<Option<&str>> for Arg {
    fn from(v: Option<&str>) -> Self {
        Arg::Text(v.map(str::to_owned))
    }
}
impl From<Option<String>> for Arg {
    fn from(v: Option<String>) -> Self {
        Arg::Text(v)
    }
}
impl From<i64> for Arg {
    fn from(v: i64) -> Self {
        Arg::Int(Some(v))
    }
}
impl From<Option<i64>> for Arg {
    fn from(v: Option<i64>) -> Self {
        Arg::Int(v)
    }
}
impl From<Vec<u8>> for Arg {
    fn from(v: Vec<u8>) -> Self {
        Arg::Blob(v)
    }
}

/// A row of either backend.
pub(crate) enum Row {
    Sqlite(SqliteRow),
    Pg(PgRow),
}

/// A column type both drivers decode.
pub(crate) trait Column:
    for<'r> sqlx::Decode<'r, Sqlite>
    + sqlx::Type<Sqlite>
    + for<'r> sqlx::Decode<'r, Postgres>
    + sqlx::Type<Postgres>
{
}
impl<T> Column for T where
    T: for<'r> sqlx::Decode<'r, Sqlite>
        + sqlx::Type<Sqlite>
        + for<'r> sqlx::Decode<'r, Postgres>
        + sqlx::Type<Postgres>
{
}

impl Row {
    pub fn get<T: Column>(&self, column: &str) -> Result<T> {
        use sqlx::Row as _;
        Ok(match self {
            Row::Sqlite(r) => r.try_get(column)?,
            Row::Pg(r) => r.try_get(column)?,
        })
    }

    /// A column as a bound value of the same kind, for copying rows.
    pub fn arg(&self, column: &str, kind: Kind) -> Result<Arg> {
        Ok(match kind {
            Kind::Text => Arg::Text(self.get(column)?),
            Kind::Int => Arg::Int(self.get(column)?),
            Kind::Blob => Arg::Blob(self.get(column)?),
        })
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Kind {
    Text,
    Int,
    Blob,
}

/// A statement and its arguments.
pub(crate) struct Q {
    sql: String,
    args: Vec<Arg>,
}

/// Starts a statement.
pub(crate) fn q(sql: impl Into<String>) -> Q {
    Q {
        sql: sql.into(),
        args: Vec::new(),
    }
}

macro_rules! bound {
    ($db:ty, $sql:expr, $args:expr) => {{
        let mut query = sqlx::query::<$db>($sql);
        for a in $args {
            query = match a {
                Arg::Text(v) => query.bind(v),
                Arg::Int(v) => query.bind(v),
                Arg::Blob(v) => query.bind(v),
            };
        }
        query
    }};
}

/// Where a statement runs: a pool, or an open transaction.
pub(crate) enum On<'a> {
    Db(&'a Db),
    Tx(&'a mut Tx),
}

impl<'a> From<&'a Db> for On<'a> {
    fn from(d: &'a Db) -> Self {
        On::Db(d)
    }
}
impl<'a> From<&'a mut Tx> for On<'a> {
    fn from(t: &'a mut Tx) -> Self {
        On::Tx(t)
    }
}

impl Q {
    pub fn bind(mut self, a: impl Into<Arg>) -> Self {
        self.args.push(a.into());
        self
    }

    pub fn bind_arg(mut self, a: Arg) -> Self {
        self.args.push(a);
        self
    }

    /// Runs the statement; the number of rows it changed.
    pub async fn exec<'a>(self, on: impl Into<On<'a>>) -> Result<u64> {
        let Q { sql, args } = self;
        Ok(match on.into() {
            On::Db(Db::Sqlite(p)) => bound!(Sqlite, &sql, args).execute(p).await?.rows_affected(),
            On::Db(Db::Pg(p)) => bound!(Postgres, &sql, args)
                .execute(p)
                .await?
                .rows_affected(),
            On::Tx(Tx::Sqlite(t)) => bound!(Sqlite, &sql, args)
                .execute(&mut **t)
                .await?
                .rows_affected(),
            On::Tx(Tx::Pg(t)) => bound!(Postgres, &sql, args)
                .execute(&mut **t)
                .await?
                .rows_affected(),
        })
    }

    pub async fn all<'a>(self, on: impl Into<On<'a>>) -> Result<Vec<Row>> {
        let Q { sql, args } = self;
        Ok(match on.into() {
            On::Db(Db::Sqlite(p)) => {
                wrap(bound!(Sqlite, &sql, args).fetch_all(p).await?, Row::Sqlite)
            }
            On::Db(Db::Pg(p)) => wrap(bound!(Postgres, &sql, args).fetch_all(p).await?, Row::Pg),
            On::Tx(Tx::Sqlite(t)) => wrap(
                bound!(Sqlite, &sql, args).fetch_all(&mut **t).await?,
                Row::Sqlite,
            ),
            On::Tx(Tx::Pg(t)) => wrap(
                bound!(Postgres, &sql, args).fetch_all(&mut **t).await?,
                Row::Pg,
            ),
        })
    }

    pub async fn opt<'a>(self, on: impl Into<On<'a>>) -> Result<Option<Row>> {
        Ok(self.all(on).await?.into_iter().next())
    }

    pub async fn one<'a>(self, on: impl Into<On<'a>>) -> Result<Row> {
        self.opt(on).await?.ok_or(sqlx::Error::RowNotFound.into())
    }
}

fn wrap<R>(rows: Vec<R>, f: impl Fn(R) -> Row) -> Vec<Row> {
    rows.into_iter().map(f).collect()
}
