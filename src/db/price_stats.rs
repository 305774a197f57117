//! `price_stats`: per-symbol statistics of the price-events module, kept by
//! increments (`events = events + n`). A redelivered event would count
//! twice, so this table is correct only because each batch is applied
//! exactly once (its offsets commit in the same transaction).

use std::collections::BTreeMap;

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Double, Integer, Text, Timestamp};

use super::schema::price_stats::dsl as ps;
use super::{now, DbConnection, DbError};
use crate::on_backend;

/// One batch's events of a symbol, folded.
#[derive(Debug, Clone, PartialEq)]
pub struct PriceStat {
    pub symbol: String,
    pub events: i64,
    pub last_price: f64,
    pub min_price: f64,
    pub max_price: f64,
}

impl PriceStat {
    /// Folds prices in applying order into one stat per symbol, in symbol
    /// order: lanes update rows in one order, so two of them never wait
    /// on each other's row locks in a circle (a deadlock).
    pub fn fold<'a>(prices: impl IntoIterator<Item = (&'a str, f64)>) -> Vec<PriceStat> {
        let mut out: BTreeMap<&str, PriceStat> = BTreeMap::new();
        for (symbol, price) in prices {
            out.entry(symbol)
                .and_modify(|s| {
                    s.events += 1;
                    s.last_price = price;
                    s.min_price = s.min_price.min(price);
                    s.max_price = s.max_price.max(price);
                })
                .or_insert_with(|| PriceStat {
                    symbol: symbol.to_string(),
                    events: 1,
                    last_price: price,
                    min_price: price,
                    max_price: price,
                });
        }
        out.into_values().collect()
    }
}

const PG_UPSERT: &str = "INSERT INTO price_stats (symbol, events, last_price, min_price, max_price, updated_at) \
     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (symbol) DO UPDATE SET \
     events = price_stats.events + excluded.events, last_price = excluded.last_price, \
     min_price = LEAST(price_stats.min_price, excluded.min_price), \
     max_price = GREATEST(price_stats.max_price, excluded.max_price), updated_at = excluded.updated_at";
const SQLITE_UPSERT: &str = "INSERT INTO price_stats (symbol, events, last_price, min_price, max_price, updated_at) \
     VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (symbol) DO UPDATE SET \
     events = price_stats.events + excluded.events, last_price = excluded.last_price, \
     min_price = min(price_stats.min_price, excluded.min_price), \
     max_price = max(price_stats.max_price, excluded.max_price), updated_at = excluded.updated_at";

/// Adds the stats to the stored ones (inside the caller's transaction).
pub fn add(conn: &mut DbConnection, stats: &[PriceStat]) -> Result<(), DbError> {
    let t = now();
    for s in stats {
        let sql = match conn {
            DbConnection::Postgresql(_) => PG_UPSERT,
            DbConnection::Sqlite(_) => SQLITE_UPSERT,
        };
        let q = diesel::sql_query(sql)
            .bind::<Text, _>(&s.symbol)
            .bind::<BigInt, _>(s.events)
            .bind::<Double, _>(s.last_price)
            .bind::<Double, _>(s.min_price)
            .bind::<Double, _>(s.max_price)
            .bind::<Timestamp, _>(t);
        on_backend!(conn, |c| q.execute(c))?;
    }
    Ok(())
}

const PG_MOVING_AVERAGE: &str = "UPDATE price_stats SET moving_average_window = $2, moving_average = \
     (SELECT AVG(price) FROM (SELECT price FROM price_events WHERE symbol = $1 ORDER BY id DESC LIMIT $2) AS last) \
     WHERE symbol = $1";
const SQLITE_MOVING_AVERAGE: &str = "UPDATE price_stats SET moving_average_window = ?2, moving_average = \
     (SELECT AVG(price) FROM (SELECT price FROM price_events WHERE symbol = ?1 ORDER BY id DESC LIMIT ?2)) \
     WHERE symbol = ?1";

/// Sets `symbol`'s moving average to the mean of its last `window` stored
/// prices (inside the caller's transaction, after its events are stored).
pub fn update_moving_average(conn: &mut DbConnection, symbol: &str, window: u32) -> Result<(), DbError> {
    let sql = match conn {
        DbConnection::Postgresql(_) => PG_MOVING_AVERAGE,
        DbConnection::Sqlite(_) => SQLITE_MOVING_AVERAGE,
    };
    let q = diesel::sql_query(sql).bind::<Text, _>(symbol).bind::<Integer, _>(window as i32);
    on_backend!(conn, |c| q.execute(c))?;
    Ok(())
}

/// One symbol's statistics, as the price API shows them.
#[derive(Debug, Clone, PartialEq, Queryable)]
pub struct SymbolStats {
    pub symbol: String,
    pub events: i64,
    pub last_price: f64,
    pub moving_average: Option<f64>,
    pub moving_average_window: Option<i32>,
}

/// `symbol`'s statistics, if it has any.
pub fn of(conn: &mut DbConnection, symbol: &str) -> Result<Option<SymbolStats>, DbError> {
    Ok(on_backend!(conn, |c| ps::price_stats
        .filter(ps::symbol.eq(symbol))
        .select((ps::symbol, ps::events, ps::last_price, ps::moving_average, ps::moving_average_window))
        .first(c)
        .optional())?)
}

/// The moving averages of the `limit` symbols updated last: `(symbol, average)`.
pub fn moving_averages(conn: &mut DbConnection, limit: i64) -> Result<Vec<(String, f64)>, DbError> {
    let rows: Vec<(String, Option<f64>)> = on_backend!(conn, |c| ps::price_stats
        .filter(ps::moving_average.is_not_null())
        .order(ps::updated_at.desc())
        .limit(limit)
        .select((ps::symbol, ps::moving_average))
        .load(c))?;
    Ok(rows.into_iter().filter_map(|(s, a)| Some((s, a?))).collect())
}

/// A stored row: `(symbol, events, last, min, max)`.
pub type StoredStat = (String, i64, f64, f64, f64);

/// Every symbol's stats, by symbol.
pub fn all(conn: &mut DbConnection) -> Result<Vec<StoredStat>, DbError> {
    Ok(on_backend!(conn, |c| ps::price_stats
        .select((ps::symbol, ps::events, ps::last_price, ps::min_price, ps::max_price))
        .order(ps::symbol)
        .load(c))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_per_symbol_in_symbol_order() {
        let stats = PriceStat::fold([("B", 5.0), ("A", 2.0), ("A", 1.0), ("A", 3.0)]);
        assert_eq!(
            stats,
            vec![
                PriceStat { symbol: "A".into(), events: 3, last_price: 3.0, min_price: 1.0, max_price: 3.0 },
                PriceStat { symbol: "B".into(), events: 1, last_price: 5.0, min_price: 5.0, max_price: 5.0 },
            ]
        );
    }
}
