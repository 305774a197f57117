//! What a failed rdkafka call was, for the pipeline and the operator: the
//! kind of a client error, by its code.

use rdkafka::error::KafkaError;

use crate::common::record::TopicPartition;
use crate::consume::broker::{BrokerError, BrokerErrorKind};
use crate::events::{ClientCallFailed, Event as _};

/// A client error with its kind, by its code.
pub(super) fn broker_error(e: KafkaError) -> BrokerError {
    use rdkafka::error::RDKafkaErrorCode as C;
    let kind = match e.rdkafka_error_code() {
        Some(
            C::AllBrokersDown
            | C::BrokerTransportFailure
            | C::Resolve
            | C::NetworkException
            | C::CoordinatorNotAvailable
            | C::NotCoordinator,
        ) => BrokerErrorKind::Unreachable,
        Some(C::OperationTimedOut | C::RequestTimedOut | C::TimedOutQueue) => BrokerErrorKind::Timeout,
        Some(
            C::Authentication
            | C::SaslAuthenticationFailed
            | C::TopicAuthorizationFailed
            | C::GroupAuthorizationFailed
            | C::IllegalGeneration
            | C::UnknownMemberId
            | C::RebalanceInProgress
            | C::FencedInstanceId
            | C::UnknownTopicOrPartition,
        ) => BrokerErrorKind::Refused,
        _ => BrokerErrorKind::Client,
    };
    BrokerError::new(kind, e.to_string())
}

/// A client call failed: see [`ClientCallFailed`].
pub(super) fn call_failed(call: &'static str, partitions: &[TopicPartition], e: KafkaError, serious: bool) {
    let e = broker_error(e);
    ClientCallFailed { call, partitions, kind: e.kind.as_str(), error: &e.message, serious }.emit();
}
