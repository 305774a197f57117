//! `Record`: one Kafka message as the handlers see it, owned and detached
//! from the client so a batch can outlive the poll that produced it; and
//! the [`TopicPartition`] it was read from.

use std::fmt;

/// A topic's partition: where records are read from and offsets kept.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: i32,
}

impl TopicPartition {
    pub fn new(topic: impl Into<String>, partition: i32) -> Self {
        TopicPartition { topic: topic.into(), partition }
    }

    /// Whether `record` was read from this partition.
    pub fn holds(&self, record: &Record) -> bool {
        self.partition == record.partition && self.topic == record.topic
    }
}

/// `topic/partition`, the form log lines use.
impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    /// Milliseconds since the epoch, when the broker gave one.
    pub timestamp: Option<i64>,
}

impl Record {
    /// The partition it was read from.
    pub fn tp(&self) -> TopicPartition {
        TopicPartition::new(self.topic.clone(), self.partition)
    }

    /// Where the record was read and what it held, as stored beside the rows
    /// it produced.
    pub fn source(&self) -> Source<'_> {
        Source { topic: &self.topic, partition: self.partition, offset: self.offset, fingerprint: self.fingerprint() }
    }

    /// A stable 64-bit hash (FNV-1a) of the key, the payload and the
    /// timestamp. A redelivery has the same; a record at a reused position
    /// (the topic deleted and recreated) almost surely not.
    pub fn fingerprint(&self) -> i64 {
        let mut h = Fnv::default();
        for part in [&self.key, &self.payload] {
            match part {
                None => h.write(&[0]),
                Some(bytes) => {
                    h.write(&[1]);
                    h.write(&(bytes.len() as u64).to_le_bytes());
                    h.write(bytes);
                }
            }
        }
        h.write(&self.timestamp.unwrap_or(i64::MIN).to_le_bytes());
        h.0 as i64
    }

    /// `topic/partition@offset`, the form every log line uses.
    pub fn position(&self) -> String {
        format!("{}/{}@{}", self.topic, self.partition, self.offset)
    }

    /// The bytes it holds: its key and payload.
    pub fn bytes(&self) -> usize {
        self.key.as_ref().map_or(0, Vec::len) + self.payload.as_ref().map_or(0, Vec::len)
    }
}

/// A record's source position and fingerprint ([`Record::source`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub fingerprint: i64,
}

struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(key: Option<&[u8]>, payload: Option<&[u8]>, timestamp: Option<i64>) -> Record {
        Record {
            topic: "t".into(),
            partition: 0,
            offset: 7,
            key: key.map(<[u8]>::to_vec),
            payload: payload.map(<[u8]>::to_vec),
            timestamp,
        }
    }

    #[test]
    fn fingerprint_is_stable_and_tells_contents_apart() {
        // Stored fingerprints must not change between versions.
        assert_eq!(rec(None, None, None).fingerprint(), 7_625_306_429_887_747_597);
        let base = rec(Some(b"k"), Some(b"{}"), Some(1));
        assert_eq!(base.fingerprint(), base.clone().fingerprint());
        let others = [
            rec(None, Some(b"{}"), Some(1)),
            rec(Some(b""), Some(b"{}"), Some(1)),
            rec(Some(b"k"), Some(b"{ }"), Some(1)),
            rec(Some(b"k{"), Some(b"}"), Some(1)),
            rec(Some(b"k"), Some(b"{}"), Some(2)),
            rec(Some(b"k"), Some(b"{}"), None),
        ];
        for o in others {
            assert_ne!(o.fingerprint(), base.fingerprint(), "{o:?}");
        }
    }
}
