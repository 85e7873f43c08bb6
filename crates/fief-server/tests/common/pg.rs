//! A throwaway PostgreSQL database and runtime role per test, from
//! `FIEF_TEST_DATABASE_URL` (a superuser URL, e.g. the local `postgres`).
//! Without it the PostgreSQL tests skip, except under `CI=true`.

use fief_config::PostgresConfig;

/// Every table of tenant content, in each placement (fief-store's
/// `placement.rs`).
pub const CONTENT_TABLES: [&str; 8] = [
    "knowledge_bases",
    "kb_documents",
    "kb_chunks",
    "models",
    "policies",
    "roles",
    "items",
    "log_records",
];

pub struct TestPg {
    pub config: PostgresConfig,
    pub admin_url: String,
    pub database: String,
    pub role: String,
    base: String,
    cleaned: bool,
}

fn with_db(url: &str, db: &str) -> String {
    match url.rsplit_once('/') {
        Some((head, _)) => format!("{head}/{db}"),
        None => url.to_owned(),
    }
}

fn with_user(url: &str, user: &str) -> String {
    // postgres://USER[:PASS]@host/db -> postgres://user@host/db
    match (url.split_once("://"), url.rsplit_once('@')) {
        (Some((scheme, _)), Some((_, rest))) => format!("{scheme}://{user}@{rest}"),
        _ => url.to_owned(),
    }
}

/// Creates a database and a NOSUPERUSER NOBYPASSRLS login role for one test.
pub async fn database() -> Option<TestPg> {
    let Ok(base) = std::env::var("FIEF_TEST_DATABASE_URL") else {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "FIEF_TEST_DATABASE_URL is not set (CI needs the PostgreSQL tests)"
        );
        eprintln!("SKIP: FIEF_TEST_DATABASE_URL is not set");
        return None;
    };
    let suffix = format!("{:06x}", rand::random::<u32>() & 0xff_ffff);
    let database = format!("fief_test_{suffix}");
    let role = format!("fief_rt_{suffix}");
    let admin = sqlx::PgPool::connect(&base).await.unwrap();
    for s in [
        format!("CREATE DATABASE {database}"),
        format!("CREATE ROLE {role} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE"),
    ] {
        sqlx::query(&s).execute(&admin).await.unwrap();
    }
    admin.close().await;
    let admin_url = with_db(&base, &database);
    Some(TestPg {
        config: PostgresConfig::new(with_user(&admin_url, &role), admin_url.clone()),
        admin_url,
        database,
        role,
        base,
        cleaned: false,
    })
}

impl TestPg {
    /// Drops the test's databases (silo ones included) and its role.
    pub async fn cleanup(mut self) {
        self.drop_all().await;
    }

    async fn drop_all(&mut self) {
        self.cleaned = true;
        let admin = sqlx::PgPool::connect(&self.base).await.unwrap();
        let dbs: Vec<String> =
            sqlx::query_scalar("SELECT datname::text FROM pg_database WHERE datname LIKE $1")
                .bind(format!("{}%", self.database))
                .fetch_all(&admin)
                .await
                .unwrap();
        for db in dbs {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
                .execute(&admin)
                .await;
        }
        let _ = sqlx::query(&format!("DROP ROLE IF EXISTS {}", self.role))
            .execute(&admin)
            .await;
        admin.close().await;
    }

    /// Every row of the test's databases (silo ones included), as
    /// `pg_dump --data-only` writes them: what PostgreSQL holds, for
    /// scanning it for content in clear.
    pub async fn dump(&self) -> String {
        let admin = sqlx::PgPool::connect(&self.base).await.unwrap();
        let dbs: Vec<String> =
            sqlx::query_scalar("SELECT datname::text FROM pg_database WHERE datname LIKE $1")
                .bind(format!("{}%", self.database))
                .fetch_all(&admin)
                .await
                .unwrap();
        admin.close().await;
        let mut out = String::new();
        for db in dbs {
            let dump = std::process::Command::new("pg_dump")
                .args(["--data-only", "--no-owner", "--dbname"])
                .arg(with_db(&self.base, &db))
                .output()
                .expect("pg_dump (PostgreSQL's client tools)");
            assert!(
                dump.status.success(),
                "pg_dump {db}: {}",
                String::from_utf8_lossy(&dump.stderr)
            );
            out.push_str(&String::from_utf8_lossy(&dump.stdout));
        }
        out
    }

    /// What PostgreSQL's catalogs hold of `tenant`'s items.
    pub async fn catalog(&self, tenant: &str) -> Vec<String> {
        let admin = sqlx::PgPool::connect(&self.admin_url).await.unwrap();
        let ident = tenant.replace('-', "_");
        let mut found: Vec<String> =
            sqlx::query_scalar("SELECT 'schema ' || nspname FROM pg_namespace WHERE nspname = $1")
                .bind(format!("fief_t_{ident}"))
                .fetch_all(&admin)
                .await
                .unwrap();
        found.extend(
            sqlx::query_scalar::<_, String>(
                "SELECT 'database ' || datname FROM pg_database WHERE datname = $1",
            )
            .bind(format!("{}_t_{ident}", self.database))
            .fetch_all(&admin)
            .await
            .unwrap(),
        );
        // The admin here is a superuser, which row-level security does not bind.
        let mut rows = 0i64;
        for table in CONTENT_TABLES {
            let n: i64 = sqlx::query_scalar(&format!(
                "SELECT count(*) FROM fief_pool.{table} WHERE tenant_id = $1"
            ))
            .bind(tenant)
            .fetch_one(&admin)
            .await
            .unwrap();
            rows += n;
        }
        if rows > 0 {
            found.push(format!("{rows} shared rows"));
        }
        admin.close().await;
        found
    }
}

impl Drop for TestPg {
    /// A test that does not call `cleanup` (a server started under
    /// `FIEF_TEST_STORE=postgres`) still leaves no database behind.
    fn drop(&mut self) {
        if self.cleaned {
            return;
        }
        let mut this = TestPg {
            config: self.config.clone(),
            admin_url: self.admin_url.clone(),
            database: self.database.clone(),
            role: self.role.clone(),
            base: self.base.clone(),
            cleaned: true,
        };
        self.cleaned = true;
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(this.drop_all());
        })
        .join();
    }
}
