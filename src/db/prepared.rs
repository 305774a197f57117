//! Statements diesel would parse again on every execution (an UPDATE, a
//! `sql_query`), kept prepared in the connection's statement cache under
//! their call site: parsing them was a twentieth of the consumer thread's
//! time and of the sender's.

use std::marker::PhantomData;

use diesel::backend::Backend;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::{QueryResult, RunQueryDsl};

/// `Q`, cached under `Site`, a type of its own per call site (see
/// [`prepared!`](crate::prepared)).
pub struct Prepared<Q, Site> {
    query: Q,
    site: PhantomData<Site>,
}

impl<Q, Site> Prepared<Q, Site> {
    pub fn new(query: Q) -> Self {
        Prepared { query, site: PhantomData }
    }
}

impl<Q: QueryFragment<DB>, Site, DB: Backend> QueryFragment<DB> for Prepared<Q, Site> {
    fn walk_ast<'b>(&'b self, pass: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        self.query.walk_ast(pass)
    }

    fn is_safe_to_cache_prepared(&self, _backend: &DB) -> QueryResult<bool> {
        Ok(true)
    }
}

/// The cache key is the call site: a connection never sees two texts under it.
impl<Q, Site: 'static> QueryId for Prepared<Q, Site> {
    type QueryId = Site;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl<Q: Query, Site> Query for Prepared<Q, Site> {
    type SqlType = Q::SqlType;
}

impl<Q, Site, Conn> RunQueryDsl<Conn> for Prepared<Q, Site> {}

/// `$query`, kept prepared by the connection. Only for a statement whose SQL
/// text is the same on every execution from this call site (no `eq_any`
/// list, no text built from values): the cache finds it by the site alone.
#[macro_export]
macro_rules! prepared {
    ($query:expr) => {{
        struct Site;
        $crate::db::prepared::Prepared::<_, Site>::new($query)
    }};
}
