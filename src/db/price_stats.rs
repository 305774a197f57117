//! `price_stats`: per-symbol statistics of the price-events module, kept by
//! increments (`events = events + n`). A redelivered event would count
//! twice, so this table is correct only because each batch is applied
//! exactly once (its offsets commit in the same transaction).

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Double, Text, Timestamp};

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
    /// Folds prices in applying order into one stat per symbol.
    pub fn fold<'a>(prices: impl IntoIterator<Item = (&'a str, f64)>) -> Vec<PriceStat> {
        let mut out: Vec<PriceStat> = Vec::new();
        for (symbol, price) in prices {
            match out.iter_mut().find(|s| s.symbol == symbol) {
                Some(s) => {
                    s.events += 1;
                    s.last_price = price;
                    s.min_price = s.min_price.min(price);
                    s.max_price = s.max_price.max(price);
                }
                None => out.push(PriceStat {
                    symbol: symbol.to_string(),
                    events: 1,
                    last_price: price,
                    min_price: price,
                    max_price: price,
                }),
            }
        }
        out
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
    fn folds_per_symbol_in_order() {
        let stats = PriceStat::fold([("A", 2.0), ("B", 5.0), ("A", 1.0), ("A", 3.0)]);
        assert_eq!(
            stats,
            vec![
                PriceStat { symbol: "A".into(), events: 3, last_price: 3.0, min_price: 1.0, max_price: 3.0 },
                PriceStat { symbol: "B".into(), events: 1, last_price: 5.0, min_price: 5.0, max_price: 5.0 },
            ]
        );
    }
}
