//! `Record`: one Kafka message as the handlers see it, owned and detached
//! from the client so a batch can outlive the poll that produced it.

use rdkafka::message::{BorrowedMessage, Message};

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
    pub fn from_message(m: &BorrowedMessage<'_>) -> Record {
        Record {
            topic: m.topic().to_string(),
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            payload: m.payload().map(<[u8]>::to_vec),
            timestamp: m.timestamp().to_millis(),
        }
    }

    /// `topic/partition@offset`, the form every log line uses.
    pub fn position(&self) -> String {
        format!("{}/{}@{}", self.topic, self.partition, self.offset)
    }
}
