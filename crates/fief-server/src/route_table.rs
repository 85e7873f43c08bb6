//! A router that remembers its routes: every capability module adds its
//! routes here (method and path), so the OpenAPI document can be checked
//! against what the listener really serves (`openapi.rs` and its test).

use axum::handler::Handler;
use axum::routing::{delete, get, patch, post, put};
use axum::Router;

use crate::state::SharedState;

/// A route's method, as the OpenAPI document spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Method {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::Get => "get",
            Method::Post => "post",
            Method::Put => "put",
            Method::Patch => "patch",
            Method::Delete => "delete",
        }
    }
}

/// Routes of one plane, with their table.
pub struct Routes {
    router: Router<SharedState>,
    table: Vec<(Method, &'static str)>,
}

impl Default for Routes {
    fn default() -> Self {
        Self::new()
    }
}

macro_rules! method {
    ($name:ident, $method:ident, $variant:ident) => {
        pub fn $name<H, T>(mut self, path: &'static str, handler: H) -> Self
        where
            H: Handler<T, SharedState>,
            T: 'static,
        {
            // axum merges a path's methods across calls.
            self.router = self.router.route(path, $method(handler));
            self.table.push((Method::$variant, path));
            self
        }
    };
}

impl Routes {
    pub fn new() -> Self {
        Self {
            router: Router::new(),
            table: Vec::new(),
        }
    }

    method!(get, get, Get);
    method!(post, post, Post);
    method!(put, put, Put);
    method!(patch, patch, Patch);
    method!(delete, delete, Delete);

    pub fn merge(mut self, other: Routes) -> Self {
        self.router = self.router.merge(other.router);
        self.table.extend(other.table);
        self
    }

    /// Every route added so far gets `value` as a request extension.
    pub fn with_extension<T: Clone + Send + Sync + 'static>(mut self, value: T) -> Self {
        self.router = self.router.layer(axum::Extension(value));
        self
    }

    /// Every (method, path) served, sorted.
    pub fn table(&self) -> Vec<(Method, &'static str)> {
        let mut t = self.table.clone();
        t.sort();
        t
    }

    pub fn into_router(self) -> Router<SharedState> {
        self.router
    }
}
